#!/usr/bin/env python3
"""regress.py: the table of bench/regress.sh from airbench.py's JSON for targets `base` and
`new`: per figure both medians, new/base, and whether the new build is within the bound
(5 % by default) of the base, in the figure's better direction."""
import argparse
import json

from report import ROWS, fmt, med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="bench/regress.sh")
    ap.add_argument("--load", default="?")
    ap.add_argument("--elapsed", default="?")
    ap.add_argument("--base", default="base")
    ap.add_argument("--new", default="new")
    ap.add_argument("--bound", type=float, default=0.05)
    a = ap.parse_args()
    with open(a.results) as f:
        d = json.load(f)
    base = d["targets"]["base"]["samples"]
    new = d["targets"]["new"]["samples"]
    args = d.get("args", {})
    names = {"chunk": args.get("chunk_mib"), "conns": args.get("conns"),
             "put_conns": args.get("put_conns"), "layers": args.get("layers"),
             "layer_kib": args.get("layer_kib"), "workers": args.get("workers"),
             "n_tags_small": args.get("tags_small"), "n_tags_big": args.get("tags_big"),
             "n_repos": args.get("repos")}
    lines = [
        "# airdock vs an older airdock build (bench/regress.sh)",
        "",
        "Command: `%s`; %s s; load average (1, 5, 15 min) %s." % (a.command, a.elapsed, a.load),
        "",
        "- base: %s" % a.base,
        "- new: %s" % a.new,
        "",
        "Medians over the repetitions, both builds measured interleaved in one run. new/base > 1",
        "is better for rates and worse for times, CPU and memory; \"within\" says whether the new",
        "build is no more than %d %% worse than the base." % round(a.bound * 100),
        "",
        "| figure | unit | base | new | new/base | within %d %% |" % round(a.bound * 100),
        "|---|---|---:|---:|---:|---|",
    ]
    worse = []
    for key, label, unit, higher in ROWS:
        b, n = med(base.get(key, [])), med(new.get(key, []))
        if b is None or n is None:
            continue
        try:
            label = label.format(**names)
        except (KeyError, IndexError):
            pass
        ratio = n / b if b else None
        if ratio is None:
            ok = "–"
        else:
            ok_b = ratio >= 1 - a.bound if higher else ratio <= 1 + a.bound
            ok = "yes" if ok_b else "**no**"
            if not ok_b:
                worse.append(label.strip())
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            label.replace("|", "\\|"), unit, fmt(b), fmt(n),
            "–" if ratio is None else "%.3f" % ratio, ok))
    lines += ["", "Outside the bound: %s." % (", ".join(worse) if worse else "none"), ""]
    with open(a.out, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
