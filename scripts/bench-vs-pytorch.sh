#!/usr/bin/env bash
# sambench against PyTorch on this machine, config by config in one sitting: for every model and
# mode, `sambench bench` and ../shared/anchors/torch_bench.py --single (channels_last, PyTorch's
# faster format here) run one after the other, each in its own process, with the same batch,
# threads, warm-up and timed steps; the order alternates between rounds. Prints the table of
# median images/s, the ratios and each process's peak memory, and writes it as JSON.
#
#   bash scripts/bench-vs-pytorch.sh [--models resnet20,resnet32,wrn16_4] [--modes eval,sgd,sam]
#                                    [--steps 20] [--warmup 5] [--threads 2] [--rounds 1]
#                                    [--json results/bench-vs-pytorch.json]
#
# SAMBENCH (default .build/release/sambench) and PYTHON (default .build-venv/bin/python, with
# torch==2.13.0+cpu; scripts/test.sh makes it) name the two; nothing else may load the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SAMBENCH=${SAMBENCH:-.build/release/sambench}
PYTHON=${PYTHON:-.build-venv/bin/python}
TORCH_BENCH=${TORCH_BENCH:-../shared/anchors/torch_bench.py}
[ -x "$SAMBENCH" ] || { echo "error: $SAMBENCH not built (swift build -c release)" >&2; exit 2; }
"$PYTHON" -c 'import torch' 2>/dev/null || { echo "error: $PYTHON has no torch (bash scripts/test.sh makes .build-venv)" >&2; exit 2; }
[ -f "$TORCH_BENCH" ] || { echo "error: $TORCH_BENCH not found" >&2; exit 2; }

exec "$PYTHON" - "$SAMBENCH" "$TORCH_BENCH" "$@" <<'EOF'
import argparse, json, os, statistics, subprocess, sys, tempfile, time

sambench, torch_bench = sys.argv[1], sys.argv[2]
ap = argparse.ArgumentParser(prog="bench-vs-pytorch.sh")
ap.add_argument("--models", default="resnet20,resnet32,wrn16_4")
ap.add_argument("--modes", default="eval,sgd,sam")
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=1)
ap.add_argument("--json", default="results/bench-vs-pytorch.json")
args = ap.parse_args(sys.argv[3:])

def median_ips(times, batch):
    return batch / statistics.median(times)

rows = []
env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
for model in args.models.split(","):
    for mode in args.modes.split(","):
        row = dict(model=model, mode=mode, sambench=[], torch=[], sambench_peak_mib=None, torch_peak_mib=None)
        for rnd in range(args.rounds):
            order = ["sambench", "torch"] if rnd % 2 == 0 else ["torch", "sambench"]
            for who in order:
                if who == "sambench":
                    out = subprocess.run([sambench, "bench", "--model", model, "--modes", mode, "--threads", str(args.threads),
                                          "--steps", str(args.steps), "--warmup", str(args.warmup), "--format", "json"],
                                         capture_output=True, text=True, env=env)
                    if out.returncode != 0: sys.exit(f"error: sambench bench {model} {mode}:\n{out.stderr[-2000:]}")
                    r = json.loads(out.stdout)["results"][0]
                    row["sambench"].append(r["images_per_s"]["median"])
                    row["sambench_peak_mib"] = max(row["sambench_peak_mib"] or 0, r["peak_rss_bytes"] / 1048576)
                else:
                    # Peak memory of the torch process, from the kernel's accounting of the child.
                    with tempfile.TemporaryFile("w+") as errors:
                        p = subprocess.Popen([sys.executable, torch_bench, "--single", model, mode, "channels_last",
                                              "--steps", str(args.steps), "--warmup", str(args.warmup)],
                                             stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
                        stdout = p.stdout.read()
                        _, status, usage = os.wait4(p.pid, 0)
                        errors.seek(0)
                        if status != 0: sys.exit(f"error: torch_bench {model} {mode}:\n{errors.read()[-2000:]}")
                    line = [l for l in stdout.splitlines() if l.startswith("RESULT ")][0]
                    r = json.loads(line[len("RESULT "):])
                    row["torch"].append(median_ips(r["step_times_s"], r["batch"]))
                    row["torch_peak_mib"] = max(row["torch_peak_mib"] or 0, usage.ru_maxrss / 1024)
                print(f"  {model} {mode} {who}: {row[who][-1]:.1f} img/s", file=sys.stderr, flush=True)
        row["ratio"] = statistics.median(row["sambench"]) / statistics.median(row["torch"])
        rows.append(row)

print(f"batch 128, {args.threads} threads, median of {args.steps} timed steps after {args.warmup} warm-up, "
      f"{args.rounds} round(s); PyTorch channels_last")
print(f"| model | mode | sambench img/s | PyTorch img/s | ratio | sambench peak MiB | PyTorch peak MiB |")
print(f"|---|---|---|---|---|---|---|")
for r in rows:
    fmt = lambda xs: ", ".join(f"{x:.0f}" for x in xs)
    print(f"| {r['model']} | {r['mode']} | {fmt(r['sambench'])} | {fmt(r['torch'])} | {r['ratio']:.2f}x | "
          f"{r['sambench_peak_mib']:.0f} | {r['torch_peak_mib']:.0f} |")
os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
with open(args.json, "w") as f:
    json.dump(dict(date=time.strftime("%Y-%m-%d %H:%M"), threads=args.threads, steps=args.steps, warmup=args.warmup,
                   rounds=args.rounds, rows=rows), f, indent=1)
print(f"JSON: {args.json}")
EOF
