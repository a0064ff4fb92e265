#!/usr/bin/env python3
"""Prints the VM matrix: case by variant by kernel (scripts/vm-test).

Each argument is KERNEL=DIR, DIR holding what the guest left: zdtm.out
(libtest's output), kernel (uname -r), seconds, or skip (why the kernel
was not booted). The reason of a failure is the first line of its
message; of a skip, libtest's ignore reason.
"""
import os
import re
import sys

LINE = re.compile(r"^test (\S+)\s+\.\.\. (ok|FAILED|ignored)(?:, (.*))?$")


def first_reason(block):
    """The engine's own error line if the block has one, else its first line."""
    lines = [l.strip() for l in block if l.strip() and not l.startswith("----")]
    for line in lines:
        if line.startswith("Error ("):
            return line
    return lines[0] if lines else ""


def parse(d):
    res = {}
    # zdtm.N.out: earlier runs that a continued run (-c) carried on.
    parts = sorted(
        (p for p in os.listdir(d) if re.fullmatch(r"zdtm\.\d+\.out", p)),
        key=lambda p: int(p.split(".")[1]),
    )
    lines = []
    for p in parts + ["zdtm.out"]:
        path = os.path.join(d, p)
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                lines += f.read().splitlines()
    for line in lines:
        m = LINE.match(line)
        if m:
            name, st, why = m.groups()
            st = {"ok": "pass", "FAILED": "fail", "ignored": "skip"}[st]
            res[name] = [st, why or ""]
    # libtest-mimic prints each failure's message under "---- NAME ----".
    cur, block = None, []
    for line in lines + ["---- <end> ----"]:
        m = re.match(r"^---- (\S+) (?:stdout )?----$", line)
        if m or line.startswith("failures:") and cur:
            if cur in res and res[cur][0] == "fail":
                res[cur][1] = first_reason(block)
            cur, block = (m.group(1) if m else None), []
        elif cur:
            block.append(line)
    return res


def main():
    kernels = []
    for arg in sys.argv[1:]:
        k, d = arg.split("=", 1)
        kernels.append((k, d))
    data, notes = {}, {}
    for k, d in kernels:
        data[k] = parse(d)
        skip = os.path.join(d, "skip")
        if os.path.exists(skip):
            notes[k] = "skipped: " + open(skip).read().strip()
            continue
        rel = open(os.path.join(d, "kernel")).read().strip() if os.path.exists(os.path.join(d, "kernel")) else "?"
        secs = open(os.path.join(d, "seconds")).read().strip() if os.path.exists(os.path.join(d, "seconds")) else "?"
        total = None
        if os.path.exists(os.path.join(d, "trials")):
            done = os.path.join(d, "done")
            total = sum(1 for _ in open(os.path.join(d, "trials")))
            total += sum(1 for _ in open(done)) if os.path.exists(done) else 0
        if not data[k]:
            notes[k] = f"no results (guest did not finish; see {d}/console.log), {secs}s"
        elif not os.path.exists(os.path.join(d, "zdtm.rc")):
            notes[k] = (
                f"{rel}, {secs}s, stopped before the suite finished "
                f"({len(data[k])} of {total or '?'} trials ran; see console.log)"
            )
        else:
            notes[k] = f"{rel}, {secs}s"
    names = []
    for k, _ in kernels:
        for n in data[k]:
            if n not in names:
                names.append(n)
    cases = []
    for n in names:
        c = n.split("/")[0]
        if c not in cases:
            cases.append(c)
    variants = ["", "/iter3", "/leave-running"]
    vlabel = {"": "once", "/iter3": "iter3", "/leave-running": "leave-running"}
    print("| case | variant | " + " | ".join(k for k, _ in kernels) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in kernels) + " |")
    for c in cases:
        for v in variants:
            n = c + v
            if not any(n in data[k] for k, _ in kernels):
                continue
            cells = []
            for k, _ in kernels:
                st, why = data[k].get(n, ["-", ""])
                why = why.replace("|", "\\|")
                if len(why) > 160:
                    why = why[:157] + "..."
                cells.append(f"{st}: {why}" if why else st)
            print(f"| {c} | {vlabel[v]} | " + " | ".join(cells) + " |")
    print()
    for k, _ in kernels:
        counts = {"pass": 0, "fail": 0, "skip": 0}
        for st, _ in data[k].values():
            counts[st] += 1
        print(f"{k}: {notes[k]}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped")
    bad = any(st == "fail" for k, _ in kernels for st, _ in data[k].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
