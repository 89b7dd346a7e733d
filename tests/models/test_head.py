"""Chunked LM head: same log-probs and gradients as the full head; the ELBO never builds [B, T, V] logits."""

from __future__ import annotations

import torch

from espo.models.head import token_logprobs
from espo.objectives.mc_elbo import elbo_from_masks, sample_masks


def grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def test_chunked_logprobs_and_grads_equal_the_full_head(small_model):
    ids = torch.randint(5, 40, (3, 10), generator=torch.Generator().manual_seed(0))
    select = torch.rand(3, 10, generator=torch.Generator().manual_seed(1)) < 0.6
    targets = torch.randint(5, 40, (int(select.sum()),), generator=torch.Generator().manual_seed(2))
    results = {}
    for name, model, chunk in (("full", lambda x: small_model(x), None), ("whole", small_model, None),
                               ("chunked", small_model, 4)):
        logp = token_logprobs(model, ids, select, targets, chunk_size=chunk)
        assert logp.dtype == torch.float32 and logp.shape == targets.shape
        (logp * torch.linspace(-1, 2, logp.numel())).sum().backward()
        results[name] = (logp.detach(), grads(small_model))
    for name in ("whole", "chunked"):
        # Same float32 logits, log-softmax of a row or a chunk: the reductions see the same values in the same
        # order except for the chunking, ≲ a few ε32·|log p| (|log p| ≤ 5: ≲ 2e-6) in the worst case, inside
        # atol 1e-6 + rtol 1e-5·|log p| (observed: bitwise equal).
        torch.testing.assert_close(results[name][0], results["full"][0], atol=1e-6, rtol=1e-5)
        assert results[name][1].keys() == results["full"][1].keys()
        for key, g in results[name][1].items():
            # Gradients are sums over the selected positions, accumulated chunk by chunk instead of at once: a
            # reordered float32 sum of ≲ 20 terms, ≲ 20 ε32 (2.4e-6) of its terms' size; rtol 1e-4 and atol 1e-6
            # for entries that cancel (observed 6% of the bound).
            torch.testing.assert_close(g, results["full"][1][key], atol=1e-6, rtol=1e-4)


def test_elbo_applies_the_head_to_chunks_of_masked_positions_only(small_model, monkeypatch):
    import espo.models.head as head

    monkeypatch.setattr(head, "DEFAULT_HEAD_CHUNK", 8)
    monkeypatch.setattr(head.token_logprobs, "__kwdefaults__", {"chunk_size": 8})
    rows: list[int] = []
    network_head = small_model.lm_head

    def recording_head(hidden):
        rows.append(hidden.shape[0] if hidden.dim() == 2 else -1)
        return network_head(hidden)

    monkeypatch.setattr(small_model, "lm_head", recording_head)
    monkeypatch.setattr(small_model, "forward", lambda *a, **k: (_ for _ in ()).throw(AssertionError("full")))
    ids = torch.randint(5, 40, (4, 14), generator=torch.Generator().manual_seed(0))
    masks = sample_masks(4, 10, generator=torch.Generator().manual_seed(0))
    est = elbo_from_masks(small_model, ids, 4, masks)
    est.sum().backward()
    assert rows and -1 not in rows and max(rows) <= 8
    # Coupled passes mask every completion position exactly once (4 x 10); backward recomputes each chunk.
    assert sum(rows) == 2 * 4 * 10 and sum(rows[: len(rows) // 2]) == 4 * 10
