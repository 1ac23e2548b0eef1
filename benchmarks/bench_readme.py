"""Regenerate the README's benchmark tables: runs `factorconv bench ops` and `factorconv bench models`,
records them under benchmarks/results/ (json + markdown, with the command and machine) and rewrites the
README between the `<!-- bench:ops -->` / `<!-- bench:models -->` markers and their `<!-- /bench:... -->`
ends.

    .venv/bin/python benchmarks/bench_readme.py [--threads 2] [--device cpu] [--repeats-ops 20] [--repeats-models 15]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from factorconv.bench import bench_models, bench_ops, render_bench

ROOT = Path(__file__).resolve().parents[1]


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- bench:{name} --> ... <!-- /bench:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--repeats-ops", type=int, default=20)
    p.add_argument("--repeats-models", type=int, default=15)
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/bench_readme.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    readme = Path(args.readme).read_text()
    for suite, run in (("ops", lambda: bench_ops(device=args.device, repeats=args.repeats_ops)),
                       ("models", lambda: bench_models(device=args.device, repeats=args.repeats_models))):
        result = run()
        result["command"] = command.strip()
        text = render_bench(result, command.strip())
        stem = f"bench_{suite}_{args.device}"
        (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / f"{stem}.md").write_text(f"# factorconv bench {suite} ({args.device})\n\n{text}")
        readme = replace_block(readme, suite, text)
        print(text)
    Path(args.readme).write_text(readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
