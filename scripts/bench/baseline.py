#!/usr/bin/env python3
"""The floor of the Python tools ops replaces: argparse, PyYAML parse of jobs.yaml, a sqlite3
open, and a listing of the profiles (what `ops list` does, minus next-run times)."""
import argparse
import sqlite3

import yaml


def main() -> None:
    parser = argparse.ArgumentParser(prog="baseline")
    parser.add_argument("--config", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("command", choices=["list"])
    args = parser.parse_args()
    with open(args.config, encoding="utf-8") as f:
        jobs = yaml.safe_load(f)
    db = sqlite3.connect(f"{args.state_dir}/baseline.db")
    db.execute("CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, profile TEXT)")
    db.close()
    for name, profile in jobs["profiles"].items():
        print(f"{name}\t{profile['cron']}\t{len(profile['tasks'])}\t{profile.get('description', '')}")


if __name__ == "__main__":
    main()
