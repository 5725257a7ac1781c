#!/usr/bin/env python3
"""Summarise one conformance run for conformance/run.sh.

usage: summarize.py {main|legacy} LABEL RESULTS_DIR SUITE_EXIT_CODE EXPECTED_SKIPS_FILE

Prints exactly one line `LABEL: N passed, N failed, N skipped`, then, if
anything failed or was skipped unexpectedly, the failing test names with the
suite's messages and the last request/response exchanges it logged. The full
details go to RESULTS_DIR/failures.txt and "P F S" to RESULTS_DIR/counts.
Exit status: 0 only if nothing failed, no unexpected skip, and the suite ran.
"""

import os
import re
import sys
import xml.etree.ElementTree as ET

DETAIL_LINES = int(os.environ.get("CONFORMANCE_DETAIL_LINES", "60"))
SEP_MAIN = "=" * 80  # main suite: separates request/response exchanges
SEP_LEGACY = "=" * 78  # legacy suite (reggie debug log)


def load_expected_skips(path, suite):
    pats = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                kind, _, rx = line.partition(" ")
                if kind == suite and rx.strip():
                    pats.append(re.compile(rx.strip()))
    except FileNotFoundError:
        pass
    return pats


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


def tail_exchanges(text, sep, max_lines):
    """Keep the last request/response exchanges of a log, at most max_lines."""
    text = text.strip("\n")
    if not text:
        return ""
    blocks = [b.strip("\n") for b in text.split(sep) if b.strip()]
    out = []
    used = 0
    for block in reversed(blocks):
        lines = block.splitlines()
        if used and used + len(lines) > max_lines:
            break
        if len(lines) > max_lines:
            lines = lines[:max_lines] + ["  ... (truncated, see report.html)"]
        out.insert(0, "\n".join(lines))
        used += len(lines)
    skipped = len(blocks) - len(out)
    head = f"  ... ({skipped} earlier exchange(s) omitted)\n" if skipped > 0 else ""
    return head + ("\n" + "-" * 40 + "\n").join(out)


def indent(text, prefix="    "):
    return "\n".join(prefix + l for l in text.splitlines())


def parse_main(results_dir):
    """Returns (passed, failed, skipped, failures[], skips[]) from junit.xml."""
    root = ET.parse(os.path.join(results_dir, "junit.xml")).getroot()
    suite = root.find("testsuite")
    if suite is None:
        raise ValueError("junit.xml has no testsuite")
    n = lambda k: int(suite.get(k) or 0)
    tests, failures, errors = n("tests"), n("failures"), n("errors")
    skipped, disabled = n("skipped"), n("disabled")
    passed = tests - failures - errors - skipped - disabled
    fails, skips = [], []
    for tc in suite.iter("testcase"):
        status = tc.get("status")
        name = tc.get("name", "?")
        msgs = (tc.findtext("system-out") or "").strip()
        output = tc.findtext("system-err") or ""
        if status in ("failure", "error"):
            fails.append((name, f"[{status}] " + msgs, tail_exchanges(output, SEP_MAIN, DETAIL_LINES), output))
        elif status == "skipped":
            reason = msgs
            m = re.search(r"skipping test:\n(.*)", output, re.S)
            if not reason and m:
                reason = m.group(1).strip().split("\n" + SEP_MAIN)[0]
            skips.append((name, reason))
    return passed, failures + errors, skipped + disabled, fails, skips


def main_status_problems(results_dir):
    """API/data statuses in results.yaml that are not Pass (Disabled sparse
    data is expected when OCI_DATA_SPARSE=false)."""
    problems = []
    section = None
    sparse_on = False
    for line in read_text(os.path.join(results_dir, "results.yaml")).splitlines():
        if re.match(r"^\S", line):
            section = line.rstrip(":").strip()
            continue
        m = re.match(r"^    sparse: (\S+)$", line)
        if section == "config" and m:
            sparse_on = m.group(1) == "true"
        m = re.match(r"^  (\S.*): (\S+)$", line)
        if section in ("apis", "data") and m:
            name, status = m.group(1), m.group(2)
            if status == "Pass":
                continue
            if section == "data" and name == "Sparse Manifests" and status == "Disabled" and not sparse_on:
                continue
            problems.append(f"{'API' if section == 'apis' else 'data'} '{name}': {status}")
    return problems


def legacy_log_chunks(log_text):
    """Map spec full text -> its verbose-output chunk from suite.log."""
    chunks = {}
    for chunk in log_text.split("\n------------------------------\n"):
        lines = chunk.splitlines()
        # chunk starts with the spec text, possibly prefixed by a state marker
        for i, l in enumerate(lines[:3]):
            l = re.sub(r"^\S*\[(FAILED|SKIPPED|PANICKED)\]\s*", "", l).strip()
            if l.startswith("OCI Distribution Conformance Tests"):
                chunks.setdefault(l, "\n".join(lines[i + 1 :]))
                break
    return chunks


def parse_legacy(results_dir):
    root = ET.parse(os.path.join(results_dir, "junit.xml")).getroot()
    chunks = legacy_log_chunks(read_text(os.path.join(results_dir, "suite.log")))
    passed = failed = skipped = 0
    fails, skips = [], []
    for tc in root.iter("testcase"):
        status = tc.get("status")
        name = tc.get("name", "?")
        is_spec = name.startswith("[It] ")
        spec = name[len("[It] "):] if is_spec else name
        if status == "passed":
            if is_spec:
                passed += 1
        elif status == "skipped":
            skipped += 1
            el = tc.find("skipped")
            skips.append((spec, (el.get("message") if el is not None else "") or ""))
        else:
            failed += 1
            el = tc.find("failure")
            if el is None:
                el = tc.find("error")
            msg = ""
            if el is not None:
                msg = (el.text or "").strip() or (el.get("message") or "").strip()
            # drop Ginkgo's own failure recap at the end of the chunk (already in msg)
            chunk = re.split(r"\n\s*\[(?:FAILED|PANICKED)\] in \[", chunks.get(spec, ""))[0]
            fails.append((spec, f"[{status}] " + msg, tail_exchanges(chunk, SEP_LEGACY, DETAIL_LINES), chunk))
    return passed, failed, skipped, fails, skips


def main():
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    kind, label, results_dir, rc, skips_file = sys.argv[1:]
    rc = int(rc)
    counts_path = os.path.join(results_dir, "counts")
    try:
        if kind == "main":
            passed, failed, skipped, fails, skips = parse_main(results_dir)
        elif kind == "legacy":
            passed, failed, skipped, fails, skips = parse_legacy(results_dir)
        else:
            print(f"unknown suite kind {kind}", file=sys.stderr)
            return 2
    except (OSError, ET.ParseError, ValueError) as err:
        print(f"{label}: 0 passed, 1 failed, 0 skipped")
        print(f"  the suite produced no usable junit.xml ({err}); exit code {rc}. Tail of {results_dir}/suite.log:")
        log = read_text(os.path.join(results_dir, "suite.log")).splitlines()[-40:]
        print(indent("\n".join(log)))
        with open(counts_path, "w") as fh:
            fh.write("0 1 0\n")
        return 1

    expected = load_expected_skips(skips_file, kind)
    unexpected = [(n, r) for n, r in skips if not any(p.search(n) for p in expected)]
    inherent = [(n, r) for n, r in skips if any(p.search(n) for p in expected)]

    status_problems = main_status_problems(results_dir) if kind == "main" else []

    print(f"{label}: {passed} passed, {failed} failed, {skipped} skipped")
    with open(counts_path, "w") as fh:
        fh.write(f"{passed} {failed} {skipped}\n")

    report = []
    if fails:
        report.append(f"{label}: FAILED CHECKS ({len(fails)}):")
        for name, msg, _tail, full in fails:
            report.append(f"  * {name}\n{indent(msg.strip(), '      ')}\n      -- suite log for this check --\n{indent(full.strip(), '      ')}")
    if unexpected:
        report.append(f"{label}: UNEXPECTED SKIPS ({len(unexpected)}) -- a skip here means missing support:")
        for name, reason in unexpected:
            report.append(f"  * {name}\n{indent(reason.strip(), '      ')}")
    if inherent:
        report.append(f"{label}: inherent skips ({len(inherent)}, listed in expected-skips.txt):")
        for name, _ in inherent:
            report.append(f"  - {name}")
    with open(os.path.join(results_dir, "failures.txt"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(report) + "\n")

    if fails:
        print(f"  {len(fails)} failing check(s); last request/response exchanges shown, full log in {results_dir}/failures.txt and report.html")
        for name, msg, tail, _full in fails:
            print(f"  * {name}")
            print(indent(msg.strip(), "      "))
            if tail:
                print(indent(tail, "      | "))
    if unexpected:
        print(f"  {len(unexpected)} unexpected skip(s) (treated as failure):")
        for name, reason in unexpected:
            print(f"  * {name}")
            if reason.strip():
                print(indent(reason.strip(), "      "))
    if inherent:
        print(f"  ({len(inherent)} inherent skip(s), see expected-skips.txt)")
    if status_problems and not fails and not unexpected:
        print(f"  results.yaml reports {len(status_problems)} API/data area(s) not at Pass:")
        for p in status_problems:
            print(f"    - {p}")

    ok = failed == 0 and not unexpected and not status_problems
    if ok and rc != 0:
        print(f"  suite exited with status {rc} although it reported no failure; see {results_dir}/suite.log")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
