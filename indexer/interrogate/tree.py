"""The candidates of one chain step as a token tree: rows that share their first tokens share those
tokens' states, because CLIP's text tower is causal (a token's keys, values and output depend on
it and the tokens before it, nothing after). So each distinct (row start, token) is run once.

A step's rows are "prompt so far, phrase" + end token. Their longest common start (at least the
prompt so far and the separator's ",", often more: "by" for artists) is the cached prefix; the
rest of each row is a path in a tree of nodes, numbered level by level (level d: the nodes d tokens
after the prefix, a contiguous range), each with the nodes before it on its path (`ancestors`). A
level runs as one batch of single tokens, whatever the rows' lengths: no padding, no token twice.

Exact: the tree changes which rows share a computation, not what is computed (up to the order of
float sums). Memory is bounded by cutting the rows (sorted, so neighbours share) into chunks of at
most `max_nodes` token positions, each its own tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import numpy.typing as npt

Ids = Sequence[int]
I64 = npt.NDArray[np.int64]


def common_start(rows: Sequence[Ids]) -> int:
    """The length of the longest start shared by every row, leaving every row at least one token."""
    if not rows:
        return 0
    first = rows[0]
    n = min(len(r) for r in rows) - 1
    for r in rows[1:]:
        i = 0
        while i < n and r[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return max(0, n)


@dataclass
class Level:
    start: int  # the level's first node
    tokens: I64  # (n,) token id of each node
    ancestors: I64  # (n, d) the nodes before each on its path, nearest last (d = the level's depth)
    outputs: I64  # (k,) positions within the level of the nodes that end a row (pooled)
    parents_only: bool  # no node of the level ends a row


@dataclass
class Tree:
    rows: I64  # the rows (indices into the step's rows) this tree holds, in its order
    levels: list[Level]
    size: int  # nodes
    end_node: I64  # (len(rows),) the node ending each row
    out_index: dict[int, int]  # node → its place among the pooled outputs, level by level

    @property
    def depth(self) -> int:
        return len(self.levels)


def build(suffixes: Sequence[Ids], rows: Sequence[int]) -> Tree:
    """The tree of `suffixes[r]` for r in `rows` (each at least one token)."""
    cur = {r: -1 for r in rows}  # each row's node at the previous level
    end_node = {}
    levels: list[Level] = []
    parents_of: list[int] = []
    anc_prev: I64 = np.zeros((0, 0), dtype=np.int64)
    prev_start = 0
    alive = list(rows)
    size, d = 0, 0
    out_index: dict[int, int] = {}
    while alive:
        seen: dict[tuple[int, int], int] = {}
        tokens: list[int] = []
        parents: list[int] = []
        ends: set[int] = set()
        nxt = []
        for r in alive:
            key = (cur[r], int(suffixes[r][d]))
            node = seen.get(key)
            if node is None:
                node = seen[key] = size + len(tokens)
                tokens.append(key[1])
                parents.append(key[0])
            cur[r] = node
            if len(suffixes[r]) == d + 1:
                end_node[r] = node
                ends.add(node)
            else:
                nxt.append(r)
        par = np.asarray(parents, dtype=np.int64)
        if d == 0:
            anc: I64 = np.zeros((len(tokens), 0), dtype=np.int64)
        else:
            anc = np.concatenate([anc_prev[par - prev_start], par[:, None]], axis=1)
        outputs = np.asarray(sorted(n - size for n in ends), dtype=np.int64)
        for n in outputs:
            out_index[size + int(n)] = len(out_index)
        levels.append(Level(size, np.asarray(tokens, dtype=np.int64), anc, outputs, len(outputs) == 0))
        parents_of.extend(parents)
        anc_prev, prev_start = anc, size
        size += len(tokens)
        alive, d = nxt, d + 1
    return Tree(np.asarray(list(rows), dtype=np.int64), levels, size,
                np.asarray([end_node[r] for r in rows], dtype=np.int64), out_index)


def chunks(suffixes: Sequence[Ids], max_nodes: int) -> Iterator[Tree]:
    """Trees over the rows sorted by their tokens (neighbours share starts), each of at most about
    `max_nodes` token positions (a row longer than that is a tree of its own)."""
    order = sorted(range(len(suffixes)), key=lambda i: tuple(suffixes[i]))
    group: list[int] = []
    total = 0
    for i in order:
        n = len(suffixes[i])
        if group and total + n > max_nodes:
            yield build(suffixes, group)
            group, total = [], 0
        group.append(i)
        total += n
    if group:
        yield build(suffixes, group)


__all__ = ["Level", "Tree", "build", "chunks", "common_start"]
