"""Integrated gradients as Inseq 0.7 runs it through Captum, in plain PyTorch, for timing
`fidelis attribute --method ig --ig-steps 50` against on the same machine at the same time.

For each of the generated tokens, the 50 interpolation points between the zero baseline and the
prefix's input embeddings go through the model in one batch (Captum's default with no
`internal_batch_size`), the target's probability at the last position is summed over the batch,
and `torch.autograd.grad` gives the gradient at the interpolated embeddings (weights get no
gradient). Inseq adds its own bookkeeping on top, so this is a lower bound of Inseq's time.

    HF_HUB_OFFLINE=1 /tmp/fidelis-py/bin/python benches/python/torch_ig.py \
        --gguf ~/.cache/fidelis/SmolLM2-135M-Instruct.Q4_1.gguf --tokens 30 --steps 50

Prints the wall time of the attribution (generation and loading excluded) as one JSON line.
"""

import argparse
import json
import os
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--prompt", default="The capital of France is")
    ap.add_argument("--tokens", type=int, default=30)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder, name = os.path.split(os.path.expanduser(args.gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    ids = [tok.bos_token_id] + tok(args.prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=args.tokens, do_sample=False, pad_token_id=0
        )
    seq = out[0].tolist()
    output = seq[len(ids):]
    embed = model.get_input_embeddings()
    m = args.steps
    alphas = (torch.arange(m, dtype=torch.float32) + 0.5) / m
    start = time.perf_counter()
    total = 0.0
    for j, target in enumerate(output):
        prefix = torch.tensor([seq[: len(ids) + j]])
        with torch.no_grad():
            x = embed(prefix)  # [1, L, d]
        points = (alphas.view(m, 1, 1) * x).requires_grad_(True)  # zero baseline
        logits = model(inputs_embeds=points).logits[:, -1, :]
        prob = torch.softmax(logits, dim=-1)[:, target]
        (grad,) = torch.autograd.grad(prob.sum(), points)
        scores = (grad.mean(0) * x[0]).norm(dim=-1)
        total += float(scores.sum())
    wall = time.perf_counter() - start
    print(json.dumps({"tokens": len(output), "steps": m, "threads": args.threads,
                      "wall_s": round(wall, 2), "checksum": total}))


if __name__ == "__main__":
    main()
