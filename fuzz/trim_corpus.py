#!/usr/bin/env python3
"""Trims fuzz/corpus/ to a budget of files, so the committed corpus stays small.

Each target keeps its seeds (files named seed-*); the rest of the budget goes, across all
targets, to the inputs that add the most coverage (edges) not yet covered by what is kept: a
greedy set cover. Run from the crate root once the targets are built without a sanitizer
(`make fuzz-ci` builds them, or `RUSTC_BOOTSTRAP=1 cargo fuzz build --sanitizer none`):

    python3 fuzz/trim_corpus.py [BUDGET]        # default: 200 files in all
"""

import os
import shutil
import subprocess
import sys
import tempfile

TARGETS = ["sni", "http_host", "proxy_protocol", "config_file", "route_keys", "durations",
           "addresses", "handoff_wire", "argv"]
TARGET_DIR = os.environ.get("CARGO_TARGET_DIR", "fuzz/target")
BIN = os.path.join(TARGET_DIR, "x86_64-unknown-linux-gnu", "release")


def merge(binary, into, *sources, control=None):
    """libFuzzer's merge of `sources` into `into`, counting edges only (no hit counts)."""
    args = [binary, "-merge=1", "-use_counters=0", into, *sources]
    if control:
        args.insert(1, f"-merge_control_file={control}")
    subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def edges(binary, path, scratch):
    """The edges one input covers, from the control file of a merge of that input alone."""
    one, empty = os.path.join(scratch, "one"), os.path.join(scratch, "empty")
    control = os.path.join(scratch, "control")
    for d in (one, empty):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    if os.path.exists(control):
        os.remove(control)
    shutil.copy(path, one)
    merge(binary, empty, one, control=control)
    with open(control) as f:
        return frozenset(e for line in f if line.startswith("COV ") for e in line.split()[2:])


def main():
    budget = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    scratch = tempfile.mkdtemp(prefix="trim-corpus-")
    kept, covered, candidates, total = {}, {}, {}, {}
    for t in TARGETS:
        corpus, binary = os.path.join("fuzz/corpus", t), os.path.join(BIN, t)
        # First the seeds plus whatever adds an edge (libFuzzer's own minimisation).
        small = os.path.join(scratch, t)
        os.makedirs(small)
        for name in os.listdir(corpus):
            if name.startswith("seed-"):
                shutil.copy(os.path.join(corpus, name), small)
        merge(binary, small, corpus)
        cover = {p: edges(binary, p, scratch)
                 for p in (os.path.join(small, n) for n in sorted(os.listdir(small)))}
        kept[t] = [p for p in cover if os.path.basename(p).startswith("seed-")]
        covered[t] = set().union(*(cover[p] for p in kept[t]))
        candidates[t] = {p: e for p, e in cover.items() if p not in kept[t]}
        total[t] = len(set().union(*cover.values()))
    # Then, while the budget lasts, the input that adds the most edges to its target.
    while sum(map(len, kept.values())) < budget:
        gain, _, t, best = max(((len(e - covered[t]), -os.path.getsize(p), t, p)
                                for t in TARGETS for p, e in candidates[t].items()),
                               default=(0, 0, None, None))
        if gain == 0:
            break
        kept[t].append(best)
        covered[t] |= candidates[t].pop(best)
    for t in TARGETS:
        corpus = os.path.join("fuzz/corpus", t)
        shutil.rmtree(corpus)
        os.makedirs(corpus)
        for p in kept[t]:
            shutil.copy(p, corpus)
        size = sum(os.path.getsize(p) for p in kept[t])
        print(f"{t}: {len(kept[t])} files, {size} bytes, {len(covered[t])} of {total[t]} edges")
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
