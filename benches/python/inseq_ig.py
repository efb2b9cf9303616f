"""Times Inseq 0.7.1 itself: integrated gradients (50 steps, Captum's one batch of points) over
SmolLM2's 30 greedy tokens after "The capital of France is", on the Q4_1 GGUF Fidelis reads,
loaded as xtask/fixtures/make_inseq_fixtures.py loads it (SmolLM2's own pre-tokenizer, so Inseq's
check that the generation starts with the prompt passes), on 2 torch threads. The Fidelis side
is `fidelis attribute --model SmolLM2-135M-Instruct.Q4_1.gguf --prompt "The capital of France
is" --method ig --ig-steps 50 --max-new-tokens 30` (docs/benchmarks.md).

    HF_HUB_OFFLINE=1 /usr/bin/time -v /tmp/inseq-py/bin/python benches/python/inseq_ig.py

(the venv of make_inseq_fixtures.py; the GGUF in ~/.cache/fidelis after `fidelis models fetch
smollm2`).
"""
import sys, time
from pathlib import Path
t0 = time.time()
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "xtask" / "fixtures"))
import torch
torch.set_num_threads(2)
import make_inseq_fixtures as m
model = m.load_smollm2("integrated_gradients", Path.home() / ".cache" / "fidelis")
t1 = time.time()
out = model.attribute("The capital of France is", generation_args={"max_new_tokens": 30, "do_sample": False}, n_steps=50, show_progress=False)
t2 = time.time()
print(f"load {t1-t0:.1f} s, attribute {t2-t1:.1f} s, total {t2-t0:.1f} s, targets {len(out.sequence_attributions[0].target)}")
