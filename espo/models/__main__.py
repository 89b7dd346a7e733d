"""``python -m espo.models OUT_DIR [--seed N]``: write a tiny random LLaDA checkpoint directory."""

import argparse

from espo.models.tiny import make_tiny_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a tiny random LLaDA checkpoint (config, weights, tokenizer).")
    parser.add_argument("out_dir", help="Directory to write the checkpoint into.")
    parser.add_argument("--seed", type=int, default=0, help="Initialisation seed.")
    args = parser.parse_args()
    print(make_tiny_checkpoint(args.out_dir, args.seed))


if __name__ == "__main__":
    main()
