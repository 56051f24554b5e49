"""From a traced step graph to the code of one step: storage, stages, and per-row gate math.

Batch rows are independent in a cell, so the step is written for one row ``b`` at a time:
every value is a row of ``width`` numbers (1 for a last-dim reduction; broadcasting is by
index), each op one short loop over its row. The step falls into *stages* cut by the
per-step matrix products (a product needs all rows of its left operand), and the time loop
(``loop.py``) runs: stage 0, products, stage 1, ... Where values live:

  ``X``   (T, B, D)   the input sequence            ``S{i}``  (T+1, B, n)  state i, [0] = initial
  ``XW{k}`` (T, B, N) input products, one GEMM      ``Y``     (T, B, n)    the outputs
  ``V{n}``  a product's operand or result: (T, B, w) when read after the step (``[ts]``), else (B, w)
  ``WS``/``SV`` every other node value side by side in one row, (B, total) per step / (T, B, total)
            for the values the backward reads (a value is an offset into the row)
  ``P{k}``  boundary tensors (parameters) as 2-D (rows 1 or B, width) arrays, or GEMM weights

and gradients alike (``dX``, ``dXW{k}``, ``dSp{i}`` for the state entering the step, ``dV{n}``
(T, B, w) for product outputs -- their weights' gradients are GEMMs after the loop --, ``dWS``/``dSV``
per step, ``dP{k}``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import ops_table as OT
from .trace import Node, StepGraph, Val

__all__ = ["Plan", "make_plan"]


@dataclass(eq=False)
class Store:
    name: str  # X, XW0, S1, V3
    kind: str  # X, XW, S, V
    width: int
    saved: bool = False  # V: kept per step for the backward
    gsaved: bool = False  # V: gradient kept per step (a per-step product's output)
    index: int = 0
    local: bool = False  # V: read and written in one stage only: one row, reused by every batch row
    level: int = 0  # the stage of a local store
    gshare: Any = None  # V: a store whose gradient is this one's, element for element (``_share_sum_grads``)


@dataclass(eq=False)
class ParamUse:
    name: str  # P{k}
    param: int  # index into graph.params
    rows: Any  # 1 or "B"
    width: Any  # an int, or the GEMM weight's shape
    kind: str  # ew, w, bias
    grad: bool = True


@dataclass(eq=False)
class Gemm:
    node: Node
    k: int
    trans: bool
    w: ParamUse
    bias: ParamUse | None
    hoisted: bool
    level: int = 0
    into: Any = None  # an input product's store the per-step product adds onto (``_fold_sums``)


@dataclass(eq=False)
class Plan:
    graph: StepGraph
    dtype: Any
    stores: list = field(default_factory=list)
    where: dict = field(default_factory=dict)  # id(Val) -> (Store, offset)
    uses: list = field(default_factory=list)  # ParamUse
    use_of: dict = field(default_factory=dict)  # (id(node), input index) -> ParamUse
    gemms: list = field(default_factory=list)
    stages: list = field(default_factory=list)  # per level: the row nodes
    consts: dict = field(default_factory=dict)  # repr(value) -> name
    n_levels: int = 1

    # -- the kernels' arguments ----------------------------------------------------------------
    def scratch_width(self) -> int:
        """The widest row a sum runs over (the kernels' scratch row ``RS``)."""
        g = self.graph
        return max([1] + [v.width for n in g.nodes for v in list(n.ins) + list(n.outs) if v.dep]
                   + [u.width for u in self.uses if isinstance(u.width, int)])

    def fwd_args(self) -> list[str]:
        return (["T", "b0", "b1", "train", "use_blas", "M", "X"] + [f"S{i}" for i in range(len(self.graph.states))]
                + ["Y"] + [g.node_name for g in self.hoisted()] + [u.name for u in self.uses]
                + [s.name for s in self.stores if s.kind == "V"]
                + [f"{a}{g.k}" for g in self.step_gemms() for a in ("PK", "WF", "TF")])

    def bwd_args(self) -> list[str]:
        ns = len(self.graph.states)
        return (["T", "b0", "b1", "use_blas", "M", "X"] + [f"S{i}" for i in range(ns)]
                + [g.node_name for g in self.hoisted()] + [u.name for u in self.uses]
                + [s.name for s in self.stores if s.kind == "V" and s.saved]
                + ["dY"] + [f"dS{i}" for i in range(ns)] + [f"dSp{i}" for i in range(ns)] + ["dX"]
                + [f"d{g.node_name}" for g in self.hoisted()] + [f"d{u.name}" for u in self.uses if u.grad]
                + [f"d{s.name}" for s in self.stores if s.kind == "V"]
                + [f"{a}{g.k}" for g in self.step_gemms() for a in ("PKB", "WB", "TB")])

    def hoisted(self) -> list:
        return [g for g in self.gemms if g.hoisted]

    def step_gemms(self, level: int | None = None) -> list:
        return [g for g in self.gemms if not g.hoisted and (level is None or g.level == level)]

    # -- access to rows ---------------------------------------------------------------------------
    def store_of(self, v: Val) -> tuple[Store, int]:
        return self.where[id(v)]


def _materialize_gemm_inputs(g: StepGraph) -> None:
    """A per-step product's left operand must be a whole row-major matrix: an Identity node copies
    a slice (x[:, i:j] of a wider value) into a buffer of its own."""
    from .ops_table import _F

    aliases: set[int] = set()
    for n in g.nodes:
        if OT.rule_for(n.op).kind == "alias":
            aliases.update(id(o) for o in n.outs)
    new_nodes = []
    for n in g.nodes:
        if OT.rule_for(n.op).kind == "gemm" and id(n.ins[0]) in aliases and n.ins[0] is not g.x:
            a = n.ins[0]
            copy = Val("node", a.shape, dep=True, width=a.width)
            idn = Node(_F.Identity, [a], [copy], uses=[("B", a.width)])
            copy.node = idn
            new_nodes.append(idn)
            n.ins = [copy] + n.ins[1:]
        new_nodes.append(n)
    g.nodes = new_nodes


def make_plan(g: StepGraph, dtype: Any) -> Plan:
    _materialize_gemm_inputs(g)
    p = Plan(g, np.dtype(dtype))
    p.where[id(g.x)] = (Store("X", "X", g.x.width), 0)
    for i, s in enumerate(g.states):
        p.where[id(s)] = (Store(f"S{i}", "S", s.width, index=i), 0)
    level: dict[int, int] = {id(g.x): 0, **{id(s): 0 for s in g.states}}

    def use(node: Node, i: int, kind: str) -> ParamUse:
        v = node.ins[i]
        k = g.params.index(v)
        rows, width = node.uses[i]
        u = ParamUse(f"P{len(p.uses)}", k, rows, width, kind, grad=v.tensor is not None and v.tensor.dtype.kind == "f")
        p.uses.append(u)
        p.use_of[(id(node), i)] = u
        return u

    vcount = 0
    for n in g.nodes:
        rule = OT.rule_for(n.op)
        lv = max([level.get(id(v), 0) for v in n.ins if v.dep] + [0])
        if rule.kind == "gemm":
            hoisted = n.ins[0] is g.x
            gm = Gemm(n, len(p.gemms), n.kw["trans"], use(n, 1, "w"), use(n, 2, "bias") if len(n.ins) > 2 else None,
                      hoisted, level=0 if hoisted else lv + 1)
            p.gemms.append(gm)
            out = n.outs[0]
            if hoisted:
                gm.node_name = f"XW{gm.k}"
                p.where[id(out)] = (Store(gm.node_name, "XW", out.width, index=gm.k), 0)
            else:
                st = Store(f"V{vcount}", "V", out.width, gsaved=True)
                vcount += 1
                gm.node_name = st.name
                p.stores.append(st)
                p.where[id(out)] = (st, 0)
            level[id(out)] = gm.level
            continue
        for i, v in enumerate(n.ins):
            if not v.dep and v.kind == "param":
                use(n, i, "ew")
            elif v.kind == "const":
                p.consts.setdefault(repr(float(v.value)), f"K{len(p.consts)}")
        if rule.kind == "alias":
            base, off = p.store_of(n.ins[0])
            for o, d in zip(n.outs, n.kw["offs"]):
                p.where[id(o)] = (base, off + d)
                level[id(o)] = lv
            continue
        for o in n.outs:
            st = Store(f"V{vcount}", "V", o.width)
            vcount += 1
            p.stores.append(st)
            p.where[id(o)] = (st, 0)
            level[id(o)] = lv
        n.level = lv
        while len(p.stages) <= lv:
            p.stages.append([])
        p.stages[lv].append(n)
    p.n_levels = max([len(p.stages)] + [gm.level + 1 for gm in p.gemms])
    _late_stages(p)
    # what the backward reads: saved per step
    for n in g.nodes:
        for v in _bwd_reads(n):
            st, _ = p.store_of(v) if v.dep else (None, 0)
            if st is not None and st.kind == "V":
                st.saved = True
    for gm in p.gemms:
        if not gm.hoisted:
            st, _ = p.store_of(gm.node.ins[0])
            if st.kind == "V":
                st.saved = True  # the weight's gradient after the loop reads every step's operand
    _fold_sums(p)
    _group_rows(p)
    _share_sum_grads(p)
    return p


def _late_stages(p: Plan) -> None:
    """Each row node runs in the last stage that is still before its first use (a per-step product of
    level L needs its operand by stage L - 1): a value only the next stage reads (a peephole term
    ``p * c`` of the carried state) is made in that stage's loop over the rows, next to its reader,
    instead of in an extra loop before the product with a B-row array in between."""
    g = p.graph
    last = p.n_levels - 1
    need: dict[int, int] = {id(v): last for v in [g.out, *g.new_states]}
    gemm_of = {id(gm.node): gm for gm in p.gemms}

    def by(v: Val, lv: int) -> None:
        if v.dep:
            need[id(v)] = min(need.get(id(v), lv), lv)

    for n in reversed(g.nodes):
        kind = OT.rule_for(n.op).kind
        if kind == "gemm":
            by(n.ins[0], gemm_of[id(n)].level - 1)
            continue
        reqs = [need[id(o)] for o in n.outs if id(o) in need]
        if kind == "alias":
            for v in n.ins:
                for r in reqs:
                    by(v, r)
            continue
        if reqs:
            n.level = max(n.level, min(reqs))
        for v in n.ins:
            by(v, n.level)
    p.stages = [[] for _ in range(p.n_levels)]
    for n in g.nodes:
        if OT.rule_for(n.op).kind not in ("gemm", "alias"):
            p.stages[n.level].append(n)


def _sum_pairs(p: Plan) -> list[tuple[Node, Store, Store]]:
    """``x W_ih^T + h W_hh^T``: the sums (node, input product's store, per-step product's store) of an input
    product and a per-step product of the same width, each used only there."""
    from .ops_table import _F

    uses: dict[int, int] = {}
    for n in p.graph.nodes:
        for v in n.ins:
            uses[id(v)] = uses.get(id(v), 0) + 1
    for v in [p.graph.out, *p.graph.new_states]:
        uses[id(v)] = uses.get(id(v), 0) + 1
    pairs = []
    for n in p.graph.nodes:
        if n.op is not _F.Add or len(n.ins) != 2 or not all(v.dep for v in n.ins):
            continue
        (sa, oa), (sb, ob) = (p.store_of(v) for v in n.ins)
        if sa.kind == "V" and sb.kind == "XW":
            (sa, oa), (sb, ob) = (sb, ob), (sa, oa)
        w = n.outs[0].width
        if (sa.kind == "XW" and sb.kind == "V" and sb.gsaved and oa == ob == 0
                and sa.width == sb.width == w and all(uses.get(id(v)) == 1 for v in n.ins)
                and n.ins[0] is not n.ins[1]):
            pairs.append((n, sa, sb))
    return pairs


def _fold_sums(p: Plan) -> None:
    """The per-step product of such a sum accumulates onto its input product's rows (GEMM beta 1, as the
    built-in layers' loop does): the sum is that array, no pass adds the two, and its gradient is the input
    product's (no copy in the backward either). Only for a product without a bias of its own, and a sum
    that is not itself the step's output or a new state (those are copied out from value rows)."""
    g = p.graph
    outs = {id(v) for v in [g.out, *g.new_states]}
    for n, sa, sb in _sum_pairs(p):
        o = n.outs[0]
        gm = next(gm for gm in p.step_gemms() if p.store_of(gm.node.outs[0])[0] is sb)
        if gm.bias is not None or id(o) in outs or gm.into is not None:
            continue
        gm.into = sa
        st, _ = p.store_of(o)
        p.stores.remove(st)
        for k, (s2, off) in list(p.where.items()):  # the sum and its slices (aliases resolved already)
            if s2 is st:
                p.where[k] = (sa, off)
        p.stages[n.level].remove(n)
        n.folded = True


def _share_sum_grads(p: Plan) -> None:
    """``x W_ih^T + h W_hh^T``: when a sum's two operands are an input product and a per-step product,
    each used only there, both gradients are the sum's -- one (T, B, N) array serves both weights' GEMMs
    after the loop (half the gradient traffic of the step, as the built-in layers' ``dxw``)."""
    for _, sa, sb in _sum_pairs(p):
        if sb.gshare is None:
            sb.gshare = sa


def _group_rows(p: Plan) -> None:
    """The per-row values no product touches live side by side in one row: ``WS`` (B, total) per step,
    ``SV`` (T, B, total) for those the backward reads; their gradients in ``dWS``/``dSV`` (B, total).
    One row array with constant offsets: one loop zeroes the gradients, and LLVM sees that the ops of
    a fused loop write disjoint ranges (no runtime alias checks between a dozen arrays)."""
    matrix = set()
    for gm in p.step_gemms():
        matrix.add(id(p.store_of(gm.node.ins[0])[0]))
        matrix.add(id(p.store_of(gm.node.outs[0])[0]))
    levels = _stage_uses(p)
    groups: dict[tuple, Store] = {}
    remap: dict[int, tuple] = {}
    for st in p.stores:
        if st.kind == "V" and id(st) not in matrix:
            used = levels.get(id(st), set())
            # a value of one stage only (read and written in one loop over the batch rows, no copy out):
            # one row (and its gradient's one row) serves every batch row, so the step's scratch stays in
            # L1/L2 next to the per-step product's packed weight instead of B rows of it
            lv = next(iter(used)) if len(used) == 1 and isinstance(next(iter(used)), int) else None
            key = (st.saved, lv)
            if key not in groups:
                name = ("SV" if st.saved else "WS") + ("" if lv is None else f"L{lv}")
                groups[key] = Store(name, "V", 0, saved=st.saved, local=lv is not None, level=lv or 0)
            grp = groups[key]
            remap[id(st)] = (grp, grp.width)
            grp.width += st.width
    if not remap:
        return
    p.stores = [st for st in p.stores if id(st) not in remap] + [g for g in groups.values() if g.width]
    for k, (st, off) in list(p.where.items()):
        if id(st) in remap:
            grp, base = remap[id(st)]
            p.where[k] = (grp, base + off)


def _stage_uses(p: Plan) -> dict[int, set]:
    """Per store: the stages whose loops read or write it ("gemm": a per-step product)."""
    g = p.graph
    uses: dict[int, set] = {}

    def add(v: Val, what: Any) -> None:
        if v.dep:
            uses.setdefault(id(p.store_of(v)[0]), set()).add(what)

    for n in g.nodes:
        kind = OT.rule_for(n.op).kind
        if kind == "alias" or getattr(n, "folded", False):  # no code: its outputs are its input's store, used where they are used
            continue
        lv = "gemm" if kind == "gemm" else n.level
        for v in n.ins:
            add(v, lv)
        for o in n.outs:
            add(o, lv)
    for v in [g.out, *g.new_states]:  # copied out (and seeded) in the last stage's loop (loop.py)
        add(v, p.n_levels - 1)
    return uses


def _bwd_reads(n: Node) -> list[Val]:
    """The values node ``n``'s backward reads."""
    rule = OT.rule_for(n.op)
    if rule.kind == "ew":
        fwd, bwd = ew_templates(n)
        names = OT.needs_of(bwd)
        vals = [v for k, v in zip("abc", n.ins) if k in names]
        return vals + (n.outs if "o" in names else [])
    if rule.kind == "reduce":
        how = rule.extra["how"]
        return [n.ins[0], n.outs[0]] if how == "max" else [n.ins[0]] if how == "argmax" else []
    if rule.kind == "softmax":
        return [n.outs[0]]
    return []


def ew_templates(n: Node) -> tuple[str, tuple]:
    rule = OT.rule_for(n.op)
    if rule.extra.get("scalar"):
        return OT.scalar_pow_rule(n.kw["p"])
    if rule.extra.get("clamp"):
        return OT.clamp_rule(n.kw["lo"], n.kw["hi"])
    return rule.fwd, rule.bwd


# -----------------------------------------------------------------------------------------------
# code of one stage, for one row b (inside ``for b in range(b0, b1)``)


class _Rows:
    """Binds the row views a stage touches, once per row, and hands out element accesses."""

    def __init__(self, plan: Plan, backward: bool):
        self.p, self.backward = plan, backward
        self.binds: dict[str, str] = {}

    def _bind(self, var: str, expr: str) -> str:
        self.binds.setdefault(var, expr)
        return var

    def value_row(self, st: Store) -> str:
        if st.kind == "X":
            return self._bind("r_X", "X[t, b]")
        if st.kind in ("XW", "S"):
            return self._bind(f"r_{st.name}", f"{st.name}[t, b]")
        if st.saved:
            return self._bind(f"r_{st.name}", f"{st.name}[ts, b]")
        if st.local:
            return self._bind(f"r_{st.name}", f"{st.name}[0]")
        if self.backward:  # pragma: no cover - make_plan marks every value a backward reads as saved
            raise AssertionError(f"{st.name} read in backward but not saved")
        return self._bind(f"r_{st.name}", f"{st.name}[b]")

    def grad_row(self, st: Store) -> str:
        if st.kind == "X":
            return self._bind("g_X", "dX[t, b]")
        if st.kind == "XW":
            return self._bind(f"g_{st.name}", f"d{st.name}[t, b]")
        if st.kind == "S":
            return self._bind(f"g_{st.name}", f"dSp{st.index}[b]")
        if st.gshare is not None:
            return self.grad_row(st.gshare)
        if st.gsaved:
            return self._bind(f"g_{st.name}", f"d{st.name}[t, b]")
        return self._bind(f"g_{st.name}", f"d{st.name}[{0 if st.local else 'b'}]")

    def param_row(self, u: ParamUse, grad: bool = False) -> str:
        r = "b" if u.rows == "B" else "0"
        pre = "g_" if grad else "r_"
        return self._bind(f"{pre}{u.name}", f"{'d' if grad else ''}{u.name}[{r}]")

    def elem(self, node: Node, i: int, w_out: int, grad: bool = False) -> str | None:
        """Element j of input ``i`` of ``node`` (or of its gradient), broadcast to width ``w_out``."""
        v = node.ins[i]
        if v.kind == "const":
            return None if grad else self.p.consts[repr(float(v.value))]
        if v.dep:
            st, off = self.p.store_of(v)
            row = self.grad_row(st) if grad else self.value_row(st)
            width = v.width
        else:
            u = self.p.use_of[(id(node), i)]
            if grad and not u.grad:
                return None
            row = self.param_row(u, grad)
            off, width = 0, u.width
        return f"{row}[{off} + j]" if width == w_out and w_out > 1 else f"{row}[{off}]"

    def out(self, v: Val, grad: bool = False) -> tuple[str, int]:
        st, off = self.p.store_of(v)
        return (self.grad_row(st) if grad else self.value_row(st)), off


def _fill(t: str, **kw: str) -> str:
    for k, v in kw.items():
        t = t.replace("{" + k + "}", f"({v})")
    return t


def _out_elem(row: str, off: int, w: int) -> str:
    return f"{row}[{off} + j]" if w > 1 else f"{row}[{off}]"


def stage_forward(plan: Plan, level: int) -> tuple[dict, list[str]]:
    """(row bindings, lines) computing the row nodes of one stage."""
    rows = _Rows(plan, backward=False)
    lines: list[str] = []
    run = _Run(lines)
    for n in plan.stages[level]:
        rule = OT.rule_for(n.op)
        o = n.outs[0]
        w = o.width
        if rule.kind == "ew":
            fwd, _ = ew_templates(n)
            args = {k: rows.elem(n, i, w) for k, i in zip("abc", range(len(n.ins)))}
            orow, ooff = rows.out(o)
            run.add(w, [f"{_out_elem(orow, ooff, w)} = {_fill(fwd, **args)}"])
            continue
        run.close()
        if rule.kind == "reduce":
            lines += _reduce_fwd(rows, n, rule.extra["how"])
        elif rule.kind == "softmax":
            lines += _softmax_fwd(rows, n, rule.extra["log"])
        elif rule.kind == "cat":
            orow, ooff = rows.out(o)
            pos = ooff
            for i, v in enumerate(n.ins):
                wi = v.width if v.dep else n.uses[i][1]
                src = rows.elem(n, i, wi)
                lines += [f"for j in range({wi}):", f"    {orow}[{pos} + j] = {src}"]
                pos += wi
        else:  # pragma: no cover
            raise AssertionError(rule.kind)
    run.close()
    return rows.binds, lines


_OFFSET = re.compile(r"\[(\d+) \+ j\]")


def _shared_offsets(body: list[str]) -> tuple[list[str], list[int]]:
    """Index ``[k + j]`` as ``[jk]`` with ``jk = k + j`` computed once per iteration: far fewer
    additions for Numba to type and lower (its compile time grows with the statements)."""
    offs: list[int] = []

    def sub(m: re.Match) -> str:
        k = int(m.group(1))
        if k == 0:
            return "[j]"
        if k not in offs:
            offs.append(k)
        return f"[j{k}]"

    return [_OFFSET.sub(sub, x) for x in body], offs


def share_offsets(lines: list[str]) -> list[str]:
    """``_shared_offsets`` for every ``for j`` loop in a block of code (the loop's indented body)."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        head = line.lstrip()
        if not head.startswith("for j in range("):
            continue
        indent = len(line) - len(head)
        body = []
        while i < len(lines) and len(lines[i]) - len(lines[i].lstrip()) > indent:
            body.append(lines[i])
            i += 1
        body, offs = _shared_offsets(body)
        pad = " " * (indent + 4)
        out += [f"{pad}j{o} = {o} + j" for o in offs] + body
    return out


class _Run:
    """Consecutive elementwise ops of one width, emitted together when the run closes (``close``: one
    short loop each). ``after`` holds statements to emit when the run closes (the backward's sums into
    broadcast inputs, kept out of the loops so that they vectorise)."""

    def __init__(self, lines: list[str]):
        self.lines, self.width, self.body, self.after = lines, None, [], []

    def add(self, w: int, stmts: list[str], after: list[str] = ()) -> None:
        if w != self.width:
            self.close()
            self.width = w
        self.body += stmts
        self.after += list(after)

    def close(self) -> None:
        # one loop per statement (rows of width 1: one loop): each op's element j only reads elements j
        # (or width-1 values) that earlier statements made, so the split loops compute the same; LLVM
        # vectorises short loops over few arrays fully, without spilling the inlined activations'
        # registers (measured: the peephole LSTM's step ~15% faster than one fused loop)
        groups = [[x] for x in self.body] if self.width and self.width > 1 else [self.body] if self.body else []
        for grp in groups:
            body, offs = _shared_offsets(grp)
            self.lines += [f"for j in range({self.width}):"] + [f"    j{o} = {o} + j" for o in offs] + ["    " + x for x in body]
        self.lines += self.after
        self.width, self.body, self.after = None, [], []


def _reduce_fwd(rows: _Rows, n: Node, how: str) -> list[str]:
    a = n.ins[0]
    w = a.width
    src = rows.elem(n, 0, w)
    orow, ooff = rows.out(n.outs[0])
    if how in ("sum", "mean"):
        end = f"acc / DT({w})" if how == "mean" else "acc"
        return [*_row_sum(src, w), f"{orow}[{ooff}] = {end}"]
    first = src.replace(" + j]", "]")
    if how == "max":
        return [f"acc = {first}", f"for j in range({w}):", f"    acc = _maximum(acc, {src})", f"{orow}[{ooff}] = acc"]
    return [*_argmax(src, first, w, n.kw["pick"]), f"{orow}[{ooff}] = acc"]


def _row_sum(expr: str, w: int) -> list[str]:
    """``acc`` = the sum over j of ``expr``: the terms into the kernel's scratch row ``RS`` (a loop LLVM
    vectorises), then ``_rowsum`` adds them in vector lanes (a sequential sum is a chain of dependent
    additions, ~4 cycles each: the LayerNorm cell's reductions were most of its step)."""
    return [f"for j in range({w}):", f"    RS[j] = {expr}", f"acc = _rowsum(RS, {w}, ZERO)"]


def _argmax(src: str, first: str, w: int, pick: str) -> list[str]:
    """``acc``, ``idx``: NumPy's argmax/argmin (the first extreme; the first NaN wins)."""
    cmp = ">" if pick == "max" else "<"
    return [f"acc = {first}", "idx = 0", f"for j in range({w}):", f"    e = {src}",
            f"    if acc == acc and (e != e or e {cmp} acc):", "        acc = e", "        idx = j"]


def _softmax_fwd(rows: _Rows, n: Node, log: bool) -> list[str]:
    w = n.ins[0].width
    src = rows.elem(n, 0, w)
    orow, ooff = rows.out(n.outs[0])
    first = src.replace(" + j]", "]")
    out = _out_elem(orow, ooff, w)
    lines = [f"m = {first}", f"for j in range({w}):", f"    m = _maximum(m, {src})", "s = ZERO"]
    if log:
        return lines + [f"for j in range({w}):", f"    s += math.exp({src} - m)", "ls = math.log(s)",
                        f"for j in range({w}):", f"    {out} = ({src} - m) - ls"]
    return lines + [f"for j in range({w}):", f"    e = math.exp({src} - m)", f"    {out} = e", "    s += e",
                    f"for j in range({w}):", f"    {out} = {out} / s"]


class GradCover:
    """Which elements of each per-step gradient row the backward step has written so far, in the order
    the code runs. The first write of an element is ``=`` (no zero-fill, no read of the old value); a
    row read before it is fully written -- or written partly over written elements -- is zero-filled
    at the step's start instead (``zero``). Tracked: the node values' rows (``dWS``/``dSV``/``dV{n}``)
    and the input products' ``dXW{k}`` (read by the weights' GEMMs after the loop: ``finish``); the
    state gradients ``dSp`` and ``dX`` always accumulate onto zeros."""

    def __init__(self) -> None:
        self.done: dict[str, np.ndarray] = {}
        self.zero: set[str] = set()

    @staticmethod
    def tracked(st: Store) -> bool:
        return st.kind in ("V", "XW")

    def _seg(self, st: Store, off: int, w: int) -> np.ndarray:
        st = st.gshare or st
        return self.done.setdefault(st.name, np.zeros(st.width, dtype=bool))[off:off + w]

    def write(self, st: Store | None, off: int = 0, w: int = 1) -> str:
        """``=`` or ``+=`` for a write of every element of ``[off, off + w)``."""
        if st is None or not self.tracked(st):
            return "+="
        seg = self._seg(st, off, w)
        if not seg.any():
            seg[:] = True
            return "="
        if not seg.all():
            self.zero.add((st.gshare or st).name)
        seg[:] = True
        return "+="

    def read(self, st: Store, off: int, w: int) -> None:
        if self.tracked(st) and not self._seg(st, off, w).all():
            self.zero.add((st.gshare or st).name)

    def accumulate(self, st: Store, off: int, w: int) -> None:
        """A ``+=`` into some elements of the range (which, only known when it runs: argmax, max)."""
        self.read(st, off, w)
        if self.tracked(st):
            self._seg(st, off, w)[:] = True

    def finish(self, plan: Plan) -> None:
        """The input products' and per-step products' gradients are read whole after the loop."""
        for gm in plan.gemms:
            st, _ = plan.store_of(gm.node.outs[0])
            self.read(st, 0, st.width)


def _grad_target(plan: Plan, n: Node, i: int, w_out: int) -> tuple[Store | None, int, int]:
    """(store, offset, width written) of input ``i``'s gradient as ``_Rows.elem(grad=True)`` indexes it;
    store None for a parameter (its gradient sums over rows and steps: always ``+=``)."""
    v = n.ins[i]
    if not v.dep:
        return None, 0, 0
    st, off = plan.store_of(v)
    return st, off, (w_out if v.width == w_out and w_out > 1 else 1)


def stage_backward(plan: Plan, level: int, cover: GradCover) -> tuple[dict, list[str]]:
    """(row bindings, lines) accumulating the gradients of one stage's nodes, in reverse order."""
    rows = _Rows(plan, backward=True)
    lines: list[str] = []
    run = _Run(lines)
    for n in reversed(plan.stages[level]):
        rule = OT.rule_for(n.op)
        o = n.outs[0]
        w = o.width
        if rule.kind == "ew":
            _, bwd = ew_templates(n)
            grow, goff = rows.out(o, grad=True)
            gst, _ = plan.store_of(o)
            stmts, after = [], []
            for i, t in enumerate(bwd):
                if t is None or i >= len(n.ins):
                    continue
                target = rows.elem(n, i, w, grad=True)
                if target is None:
                    continue
                names = OT.needs_of((t,))
                args = {k: rows.elem(n, ii, w) for k, ii in zip("abc", range(len(n.ins))) if k in names}
                if "o" in names:
                    orow, ooff = rows.out(o)
                    args["o"] = _out_elem(orow, ooff, w)
                args["g"] = _out_elem(grow, goff, w)
                cover.read(gst, goff, w)
                st, off, ww = _grad_target(plan, n, i, w)
                if st is not None and st.gshare is not None:  # the other operand's write is this one
                    continue
                op = cover.write(st, off, ww)
                if w > 1 and not target.endswith(" + j]"):  # a broadcast input: a sum over the row
                    after += [*_row_sum(_fill(t, **args), w), f"{target} {op} acc"]
                else:
                    stmts.append(f"{target} {op} {_fill(t, **args)}")
            run.add(w, stmts, after)
            continue
        run.close()
        if rule.kind == "reduce":
            lines += _reduce_bwd(rows, n, rule.extra["how"], cover)
        elif rule.kind == "softmax":
            lines += _softmax_bwd(rows, n, rule.extra["log"], cover)
        elif rule.kind == "cat":
            grow, goff = rows.out(o, grad=True)
            gst, _ = plan.store_of(o)
            pos = goff
            for i, v in enumerate(n.ins):
                wi = v.width if v.dep else n.uses[i][1]
                target = rows.elem(n, i, wi, grad=True)
                if target is not None:
                    cover.read(gst, pos, wi)
                    st, off, ww = _grad_target(plan, n, i, wi)
                    lines += [f"for j in range({wi}):", f"    {target} {cover.write(st, off, ww)} {grow}[{pos} + j]"]
                pos += wi
    run.close()
    return rows.binds, lines


def _reduce_bwd(rows: _Rows, n: Node, how: str, cover: GradCover) -> list[str]:
    w = n.ins[0].width
    target = rows.elem(n, 0, w, grad=True)
    grow, goff = rows.out(n.outs[0], grad=True)
    cover.read(rows.p.store_of(n.outs[0])[0], goff, 1)
    st, off, ww = _grad_target(rows.p, n, 0, w)
    g = f"{grow}[{goff}]"
    if how in ("sum", "mean"):
        op = cover.write(st, off, ww)
        if how == "sum":
            return [f"for j in range({w}):", f"    {target} {op} {g}"]
        return [f"gm = {g} * DT({1.0 / max(w, 1)!r})", f"for j in range({w}):", f"    {target} {op} gm"]
    if st is not None:
        cover.accumulate(st, off, ww)
    src = rows.elem(n, 0, w)
    first = src.replace(" + j]", "]")
    if how == "max":
        orow, ooff = rows.out(n.outs[0])
        m = f"{orow}[{ooff}]"
        return ["cnt = 0", f"for j in range({w}):", f"    if {src} == {m}:", "        cnt += 1",
                f"gm = {g} / cnt", f"for j in range({w}):", f"    if {src} == {m}:", f"        {target} += gm"]
    tgt0 = target.replace(" + j]", " + idx]")
    return [*_argmax(src, first, w, n.kw["pick"]), f"{tgt0} += {g}"]


def _softmax_bwd(rows: _Rows, n: Node, log: bool, cover: GradCover) -> list[str]:
    w = n.ins[0].width
    target = rows.elem(n, 0, w, grad=True)
    grow, goff = rows.out(n.outs[0], grad=True)
    cover.read(rows.p.store_of(n.outs[0])[0], goff, w)
    st, off, ww = _grad_target(rows.p, n, 0, w)
    op = cover.write(st, off, ww)
    orow, ooff = rows.out(n.outs[0])
    g, o = _out_elem(grow, goff, w), _out_elem(orow, ooff, w)
    if log:
        return ["s = ZERO", f"for j in range({w}):", f"    s += {g}", f"for j in range({w}):",
                f"    {target} {op} {g} - math.exp({o}) * s"]
    return ["s = ZERO", f"for j in range({w}):", f"    s += {g} * {o}", f"for j in range({w}):",
            f"    {target} {op} {o} * ({g} - s)"]


def value_row_expr(plan: Plan, v: Val, grad: bool = False) -> tuple[dict, str, int]:
    """(bindings, row variable, offset) of a dependent value, for the loop's copies in and out."""
    rows = _Rows(plan, backward=grad)
    st, off = plan.store_of(v)
    row = rows.grad_row(st) if grad else rows.value_row(st)
    return rows.binds, row, off
