"""``espo tiny-model OUT_DIR [--seed N] [--size demo|testbed]``: write a tiny random LLaDA checkpoint."""

import argparse

from espo.models.tiny import SIZES, make_tiny_checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="espo tiny-model",
                                     description="Write a tiny random LLaDA checkpoint (config, weights, tokenizer).")
    parser.add_argument("out_dir", help="Directory to write the checkpoint into.")
    parser.add_argument("--seed", type=int, default=0, help="Initialisation seed.")
    parser.add_argument("--size", choices=sorted(SIZES), default="demo",
                        help="demo: 0.8M parameters (the CPU demo); testbed: 4.3M (the multi-block testbed).")
    args = parser.parse_args(argv)
    print(make_tiny_checkpoint(args.out_dir, args.seed, **SIZES[args.size]))


if __name__ == "__main__":
    main()
