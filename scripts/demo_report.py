#!/usr/bin/python3
"""The demo's report: per-epoch tables of the FGSM and ELLE-A runs, a
one-line verdict, and out/demo/summary.json.

Reads the runs' log.jsonl files (one JSON object per line, written by
`elle train`: a "config" event, then one "epoch" event per epoch). Only the
standard library: Debian's meson already depends on python3.

Usage: demo_report.py OUT_DIR LABEL=RUN_DIR [LABEL=RUN_DIR ...]
"""
import json
import os
import sys


def load(run_dir):
    config, epochs = None, []
    path = os.path.join(run_dir, "log.jsonl")
    try:
        f = open(path)
    except OSError as e:
        raise SystemExit(f"demo_report: cannot read {path}: {e.strerror}")
    with f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            ev = json.loads(line)
            if ev.get("event") == "config":
                config = ev
            elif ev.get("event") == "epoch":
                epochs.append(ev)
    if config is None or not epochs:
        raise SystemExit(f"demo_report: {run_dir}/log.jsonl has no config or no epoch")
    return config, epochs


def pct(x):
    return "    -" if x is None else f"{100.0 * x:5.1f}"


def summarize(label, config, epochs):
    steps = config["batches_per_epoch"] * config.get("steps_per_batch", 1)
    train_s = sum(e["time"] for e in epochs)
    pgd = [e.get("pgd_test_acc") for e in epochs]
    best_i = max(range(len(epochs)), key=lambda i: -1 if pgd[i] is None else pgd[i])
    co = [e["epoch"] + 1 for e in epochs if e.get("co_flag")]
    regs = config.get("regularizers") or []
    monitor_only = bool(regs) and all(r.get("lambda", 0) == 0 and not r.get("adaptive")
                                      for r in regs)
    return {
        "method": label,
        "attack": (config.get("attack") or {}).get("kind"),
        "regularizers": [r["kind"] + ("-a" if r.get("adaptive") else "") for r in regs],
        "elin_monitor_only": monitor_only,
        "final_clean_acc": epochs[-1]["test_acc"],
        "final_pgd20_acc": pgd[-1],
        "best_pgd20_acc": pgd[best_i],
        "best_pgd20_epoch": epochs[best_i]["epoch"] + 1,
        "co_epoch": co[0] if co else None,
        "co_epochs": co,
        "final_train_acc": epochs[-1]["train_acc"],
        "mean_step_ms": 1000.0 * train_s / (steps * len(epochs)),
        # the lambda-0 ELLE term that measures E_lin costs one 3B forward per step
        "mean_step_ms_includes_elin_forward": monitor_only,
        "train_time_s": train_s,
        "epochs": [{
            "epoch": e["epoch"] + 1,
            "train_acc": e["train_acc"],
            "clean_acc": e["test_acc"],
            "pgd20_acc": e.get("pgd_test_acc"),
            "e_lin": e.get("reg_value"),
            "lambda_mean": e.get("lambda_mean"),
            "lambda_max": e.get("lambda_max"),
            "lambda_resets": e.get("lambda_resets"),
            "elin_alarms": e.get("elin_alarms"),
            "co_flag": bool(e.get("co_flag")),
        } for e in epochs],
    }


def table(s):
    print(f"\n{s['method']}  (attack {s['attack']}"
          + (f", regularizers {', '.join(s['regularizers'])}" if s["regularizers"] else "")
          + (", E_lin measured with lambda 0" if s["elin_monitor_only"] else "") + ")")
    print("epoch  train-adv  clean  PGD-20      E_lin   lambda mean/max  CO")
    for e in s["epochs"]:
        elin = "        -" if e["e_lin"] is None else f"{e['e_lin']:9.3g}"
        lam = "            -" if e["lambda_mean"] is None else \
            f"{e['lambda_mean']:6.1f}/{e['lambda_max']:6.1f}"
        print(f"{e['epoch']:5d}      {pct(e['train_acc'])}  {pct(e['clean_acc'])}   "
              f"{pct(e['pgd20_acc'])}  {elin}   {lam}  {'yes' if e['co_flag'] else ''}")


def verdict(by):
    f, a = by.get("fgsm"), by.get("elle-a")
    if not f or not a:
        return "incomplete: need both an fgsm and an elle-a run", False
    collapsed = f["co_epoch"] is not None and f["final_pgd20_acc"] < 0.5 * f["best_pgd20_acc"]
    held = a["co_epoch"] is None and a["final_pgd20_acc"] >= 0.5 * a["best_pgd20_acc"]
    text = (f"FGSM {'collapsed' if collapsed else 'did not collapse'} "
            f"(PGD-20 best {100 * f['best_pgd20_acc']:.1f}% at epoch {f['best_pgd20_epoch']}, "
            f"final {100 * f['final_pgd20_acc']:.1f}%"
            + (f", CO flagged at epoch {f['co_epoch']}" if f["co_epoch"] else "") + "); "
            f"ELLE-A {'held' if held else 'did not hold'} "
            f"(PGD-20 final {100 * a['final_pgd20_acc']:.1f}%, clean "
            f"{100 * a['final_clean_acc']:.1f}%); mean step {a['mean_step_ms']:.0f} ms vs "
            f"{f['mean_step_ms']:.0f} ms"
            + (" (FGSM's includes its E_lin measurement)" if f["elin_monitor_only"] else ""))
    return text, collapsed and held


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    out = argv[1]
    runs, config = [], None
    for spec in argv[2:]:
        label, _, run_dir = spec.partition("=")
        config, epochs = load(run_dir)
        runs.append(summarize(label, config, epochs))
    for s in runs:
        table(s)
    by = {s["method"]: s for s in runs}
    text, reproduced = verdict(by)
    print(f"\nverdict: {text}")
    summary = {
        "dataset": "fashion-mnist",
        "model": config["arch"],
        "eps": (config.get("attack") or {}).get("eps"),
        "epochs": config["epochs"],
        "train_size": config["train_size"],
        "batch_size": config["batch_size"],
        "schedule": config["schedule"],
        "lr": config["lr"],
        "up_fraction": config["up_fraction"],
        "pgd_test_n": config["pgd_test_n"],
        "seed": config["seed"],
        "methods": by,
        "verdict": text,
        "reproduced": reproduced,
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
