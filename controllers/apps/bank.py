"""The reference SQLite application: a bank moving money between accounts in transactions.

``run_bank(dev, ...)`` formats the LDEV layout (:mod:`.sqlite_ldev`),
creates ``accounts(id, balance)`` and ``txlog(txid, src, dst, amount)``
(transaction 0 is the set-up), then commits ``transfers`` transfers, each
one transaction: two balance updates and a ``txlog`` row with the next
txid. After each COMMIT returns, the bank notes the txid with the seq of
the last request the device saw (that request's acknowledgement is the
commit's acknowledgement). Every choice comes from ``seed``.

What a consistent image must satisfy (:func:`invariants`): SQLite's
``integrity_check`` is ok; the sum of balances is ``accounts * opening``;
there are ``accounts`` accounts; ``max(txid)`` is at least the last
transaction acknowledged before the suspension (the checker supplies it),
and the txids are exactly 0..max (no transaction half there).

``python -m controllers.apps.bank OUT.cap [--ldev-bytes N] [--accounts N]
[--transfers N] [--seed N]`` captures a run (the sidecar ``OUT.cap.json``
holds the acks and the invariants).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from controllers.apps.blockdev import BlockDevice, CapturingDevice, MemoryDevice
from controllers.apps.sqlite_ldev import LdevVfs, connect, format_ldev
from controllers.formats.capture import CaptureWriter

APP = "sqlite-bank"
DB_NAME = "bank.db"
PAGE_BYTES = 1024


def invariants(accounts: int, opening: int) -> list[dict]:
    """The bank's invariants as SQL: each query returns one value compared with ``op`` to ``value``.

    ``value`` "$acked_txid" is filled in by the checker (the last txid
    acknowledged before the suspension)."""
    return [
        {"name": "balances sum", "sql": "SELECT coalesce(sum(balance), 0) FROM accounts", "op": "==",
         "value": accounts * opening},
        {"name": "accounts", "sql": "SELECT count(*) FROM accounts", "op": "==", "value": accounts},
        {"name": "txids are 0..max", "sql": "SELECT count(*) - coalesce(max(txid), -1) - 1 FROM txlog",
         "op": "==", "value": 0},
        {"name": "acknowledged transactions held", "sql": "SELECT coalesce(max(txid), -1) FROM txlog",
         "op": ">=", "value": "$acked_txid"},
    ]


def run_bank(dev: BlockDevice, accounts: int = 3000, transfers: int = 300, seed: int = 1,
             opening: int = 1_000_000, mark=lambda txid: None) -> list[int]:
    """Run the bank on ``dev``; ``mark(txid)`` is called after each COMMIT returns. Returns the txids."""
    if accounts < 2 or transfers < 0:
        raise ValueError("the bank needs at least 2 accounts and transfers >= 0")
    rng = random.Random(seed)
    format_ldev(dev)
    vfs = LdevVfs(dev)
    try:
        con = connect(vfs, DB_NAME)
        con.pragma("page_size", PAGE_BYTES)
        with con:
            con.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);"
                        "CREATE TABLE txlog(txid INTEGER PRIMARY KEY, src INTEGER, dst INTEGER, amount INTEGER);")
            con.executemany("INSERT INTO accounts VALUES(?, ?)", [(i, opening) for i in range(accounts)])
            con.execute("INSERT INTO txlog VALUES(0, NULL, NULL, 0)")
        mark(0)
        done = [0]
        for txid in range(1, transfers + 1):
            src, dst = rng.sample(range(accounts), 2)
            amount = rng.randrange(1, 100)
            with con:   # one transaction: BEGIN ... COMMIT (ROLLBACK on an exception)
                con.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, src))
                con.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, dst))
                con.execute("INSERT INTO txlog VALUES(?, ?, ?, ?)", (txid, src, dst, amount))
            mark(txid)
            done.append(txid)
        con.close()
    finally:
        vfs.close()
    return done


def capture_bank(path: str | Path, ldev: int = 0, ldev_bytes: int = 1 << 20, site: str = "main",
                 accounts: int = 3000, transfers: int = 300, seed: int = 1, opening: int = 1_000_000) -> dict:
    """Run the bank on a fresh device of ``ldev_bytes`` recording a capture at ``path``,
    and write the sidecar ``path + ".json"``: the app, LDEV, acks ``[[txid, seq], ...]``
    and the invariants. Returns the sidecar's content."""
    path = Path(path)
    acks: list[list[int]] = []
    with CaptureWriter(path, site, {ldev: ldev_bytes}, APP) as writer:
        dev = CapturingDevice(MemoryDevice(ldev_bytes), writer, ldev)
        run_bank(dev, accounts, transfers, seed, opening, mark=lambda txid: acks.append([txid, dev.last_seq]))
        requests = writer.next_seq
    meta = {"app": "sqlite", "source": APP, "db": DB_NAME, "ldev": ldev, "site": site, "requests": requests,
            "acks": acks, "invariants": invariants(accounts, opening),
            "params": {"accounts": accounts, "transfers": transfers, "seed": seed, "opening": opening}}
    sidecar(path).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def sidecar(capture_path: str | Path) -> Path:
    """Where a capture's application facts live."""
    return Path(str(capture_path) + ".json")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controllers.apps.bank", description=__doc__.split("\n")[0])
    p.add_argument("out", help="capture file to write (its sidecar is OUT.json)")
    p.add_argument("--ldev", type=int, default=0)
    p.add_argument("--ldev-bytes", type=int, default=1 << 20)
    p.add_argument("--accounts", type=int, default=3000)
    p.add_argument("--transfers", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    meta = capture_bank(args.out, args.ldev, args.ldev_bytes, accounts=args.accounts, transfers=args.transfers,
                        seed=args.seed)
    print(f"{args.out}: {meta['requests']} requests, {len(meta['acks'])} transactions acknowledged "
          f"(sidecar {sidecar(args.out)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
