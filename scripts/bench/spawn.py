#!/usr/bin/env python3
"""Cold start by a process loop: one process per spawn from Python (posix_spawn + waitpid),
commands interleaved so that a busy neighbour slows each of them alike, the median of N spawns
per command, repeated R rounds. /bin/true is measured in the same rounds: the ratio to it is
the figure (the floor itself differs by machine and by method; hyperfine's is another).

  spawn.py [--runs N] [--rounds R] [--json FILE] NAME=COMMAND ...   (the first is the floor)

Prints one line per command: median ms and × floor, the spread over the rounds (min-max of the
rounds' ratios), and the child's own CPU time (user + system, from wait4) and its ratio, which
a busy machine disturbs less than the wall time."""

import argparse
import json
import os
import shlex
import statistics
import sys
import time


def once(argv, devnull):
    actions = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    _, _, ru = os.wait4(pid, 0)
    wall = (time.perf_counter_ns() - t0) / 1e6
    return wall, (ru.ru_utime + ru.ru_stime) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("commands", nargs="+", help="NAME=COMMAND; the first is the floor")
    a = ap.parse_args()
    cmds = [(c.split("=", 1)[0], shlex.split(c.split("=", 1)[1])) for c in a.commands]
    rounds = {name: [] for name, _ in cmds}
    cpu = {name: [] for name, _ in cmds}
    devnull = os.open(os.devnull, os.O_WRONLY)
    if True:
        for _ in range(10):
            for _, argv in cmds:
                once(argv, devnull)
        for _ in range(a.rounds):
            times = {name: [] for name, _ in cmds}
            for _ in range(a.runs):
                for name, argv in cmds:
                    times[name].append(once(argv, devnull))
            for name in times:
                rounds[name].append(statistics.median(w for w, _ in times[name]))
                cpu[name].append(statistics.median(c for _, c in times[name]))
    floor = cmds[0][0]
    result = []
    for name, _ in cmds:
        ms = statistics.median(rounds[name])
        ratios = [m / f for m, f in zip(rounds[name], rounds[floor])]
        cpu_ms = statistics.median(cpu[name])
        cpu_ratio = cpu_ms / statistics.median(cpu[floor])
        result.append({"command": name, "median_ms": ms, "ratio": statistics.median(ratios),
                       "ratio_min": min(ratios), "ratio_max": max(ratios), "rounds_ms": rounds[name],
                       "cpu_ms": cpu_ms, "cpu_ratio": cpu_ratio})
        print(f"{name}: {ms:.2f} ms, {statistics.median(ratios):.2f}x floor "
              f"(rounds {min(ratios):.2f}-{max(ratios):.2f}x); CPU {cpu_ms:.3f} ms, {cpu_ratio:.2f}x")
    if a.json:
        json.dump({"runs": a.runs, "rounds": a.rounds, "results": result}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
