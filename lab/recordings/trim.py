#!/usr/bin/env python3
"""Readable versions of the xenstored traces that `CHECKS=record-toolstack bash lab/run.sh`
leaves in $LAB/outbox/recordings/*.trace (xenstored's trace: one IN line per request and one
OUT line per reply or watch event, "\\0" shown as " ", the client named by a pointer that is
reused once a connection closes).

    python3 lab/recordings/trim.py $LAB/outbox/recordings lab/recordings      # trimmed
    python3 lab/recordings/trim.py --all $LAB/outbox/recordings /tmp/full       # every change

For each NAME.trace it writes NAME.txt: who is who (each connection gets a number in order of
appearance and a name, see classify()), then the store's changes in order: WRITE (path = value),
MKDIR, RM, SET_PERMS (owner first; n none, r read, w write, b both), transactions, WATCH and
UNWATCH, the watch events delivered to the toolstack, INTRODUCE / RELEASE / RESUME, each with its
error when the reply was one. Reads are left out. "tx" marks a request sent while its
connection had a transaction open (the trace does not show transaction ids). Trimmed (the
default): only what concerns disks and domains (vbd and qdisk nodes, /libxl device nodes,
device-model, hotplug, domain directories, @releaseDomain / @introduceDomain, every RM and every
watch of the toolstack); --all keeps every change.
"""
import os
import re
import sys

LINE = re.compile(r'^(IN|OUT) (0x[0-9a-f]+) (\d{8}) (\d\d):(\d\d):(\d\d) ([A-Z_]+) \((.*)\)\s*$')
LIFE = re.compile(r'^(CREATE|DESTROY) (connection|transaction) (0x[0-9a-f]+)')
MUTATING = {'WRITE', 'MKDIR', 'RM', 'SET_PERMS', 'TRANSACTION_START', 'TRANSACTION_END', 'WATCH',
            'UNWATCH', 'INTRODUCE', 'RELEASE', 'RESUME', 'SET_TARGET', 'RESET_WATCHES'}
RELEVANT = re.compile(r'device/vbd|backend/vbd|backend/qdisk|device-model|hotplug|@releaseDomain|'
                      r'@introduceDomain|^/local/domain/\d+$|/tool/xenio-lab/step|/libxl/\d+$|'
                      r'control/shutdown')
READS = re.compile(r'image/device-model-(pid|domid)$')   # reads that decide something


class Conn:
    def __init__(self, num, pre):
        self.num, self.pre, self.name = num, pre, None
        self.paths, self.tokens, self.watches, self.count = [], [], [], 0
        self.tx_open = False


def classify(c):
    """A name for a connection from what it did (the trace has no process names)."""
    if c.name:                                   # our stand-ins write /tool/xenio-lab/who first
        return c.name
    if any(p.startswith('/libxl/') or p.endswith('/image/device-model-pid') for p in c.paths) \
            or any(re.fullmatch(r'\d+/\d+', t) for t in c.tokens):
        return 'xl (libxl)'                      # libxl's watch tokens are "N/M"
    if '/local/domain/0/backend' in c.tokens:
        return 'fake backend (xenstore-watch)'
    if 'domlist' in c.tokens:
        return 'xenconsoled'
    if any(p.startswith('device-model/') for p in c.paths) or any('backend/qdisk' in w for w in c.watches) \
            or any(re.fullmatch(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', t) for t in c.tokens):
        return 'QEMU'                            # (QEMU's xen-bus watch tokens are UUIDs)
    rel = [p for p in c.paths if p and not p.startswith(('/', '@'))]
    if rel and any(t.startswith('FFFF') for t in c.tokens):
        # dom0's connection is older than any recording; a domain introduced meanwhile is new
        dom0 = c.pre and any(p.startswith('backend/') for p in rel)
        return 'dom0 kernel (xenbus)' if dom0 else 'domU kernel (xenbus)'
    if rel:
        return 'a domain (relative paths)'
    if c.paths and all(p.startswith('/tool/xenio-lab') for p in c.paths):
        return 'lab (step marker)'
    return 'other'


def parse(path):
    conns, live, events, pending = [], {}, [], {}
    t0 = None

    def conn(ptr, pre=True):
        if ptr not in live:
            live[ptr] = Conn(len(conns) + 1, pre)
            conns.append(live[ptr])
        return live[ptr]

    for raw in open(path, errors='replace'):
        raw = raw.rstrip('\n')
        m = LIFE.match(raw)
        if m:
            kind, what, ptr = m.groups()
            if what == 'connection':
                if kind == 'CREATE':
                    live.pop(ptr, None)
                    conn(ptr, pre=False)
                else:
                    live.pop(ptr, None)
            continue
        m = LINE.match(raw)
        if not m:
            continue
        d, ptr, _, hh, mm, ss, typ, payload = m.groups()
        secs = int(hh) * 3600 + int(mm) * 60 + int(ss)
        t0 = secs if t0 is None else t0
        c = conn(ptr)
        parts = payload.strip().split(' ')
        if d == 'IN':
            c.count += 1
            if parts and parts[0]:
                c.paths.append(parts[0])
            if typ == 'WRITE' and parts[0] == '/tool/xenio-lab/who' and c.name is None:
                c.name = payload.split(' ', 1)[1].strip()
            if typ == 'WATCH':
                c.watches.append(parts[0])
            if typ in ('WATCH', 'UNWATCH') and len(parts) > 1:
                c.tokens.append(parts[-1])
            ev = {'t': secs - t0, 'conn': c, 'typ': typ, 'payload': payload.strip(), 'tx': c.tx_open,
                  'err': None}
            if typ == 'TRANSACTION_START':
                c.tx_open = True
            if typ == 'TRANSACTION_END':
                c.tx_open = False
            events.append(ev)
            pending.setdefault(ptr, []).append(ev)
        else:
            if typ == 'WATCH_EVENT':
                if len(parts) > 1:
                    c.tokens.append(parts[-1])
                events.append({'t': secs - t0, 'conn': c, 'typ': 'WATCH_EVENT', 'payload': payload.strip(),
                               'tx': False, 'err': None})
                continue
            q = pending.get(ptr)
            if q:
                ev = q.pop(0)
                if typ == 'ERROR':
                    ev['err'] = payload.strip()
                elif ev['typ'] in ('TRANSACTION_START', 'READ'):
                    ev['reply'] = payload.strip()
    return conns, events


def fmt(ev):
    typ, p = ev['typ'], ev['payload']
    if typ == 'WRITE' and p.startswith('/tool/xenio-lab/who '):
        return f'(runs: {p.split(" ", 1)[1]})'
    if typ == 'WRITE':
        path, _, value = p.partition(' ')
        return f'WRITE      {path} = "{value}"'
    if typ == 'SET_PERMS':
        path, _, perms = p.partition(' ')
        return f'SET_PERMS  {path}  {perms}'
    if typ == 'TRANSACTION_START':
        return f'TRANSACTION_START -> {ev.get("reply", "?")}'
    if typ == 'TRANSACTION_END':
        return 'TRANSACTION_END ' + {'T': '(commit)', 'F': '(abort)'}.get(p, p)
    if typ == 'READ':
        return f'READ       {p}' + (f' -> "{ev["reply"]}"' if 'reply' in ev else '')
    if typ in ('WATCH', 'UNWATCH', 'WATCH_EVENT'):
        path, _, token = p.partition(' ')
        return f'{typ:<10} {path}  (token {token})'
    return f'{typ:<10} {p}'


def relevant(ev, names):
    typ, p, who = ev['typ'], ev['payload'], names[ev['conn'].num]
    if typ in ('INTRODUCE', 'RELEASE', 'RESUME', 'RM', 'READ') or p.startswith('/tool/xenio-lab/who'):
        return True
    if typ == 'WATCH_EVENT':
        return who.startswith('xl') or p.startswith('@')
    if typ in ('WATCH', 'UNWATCH'):
        return who.startswith('xl') or bool(RELEVANT.search(p))
    return bool(RELEVANT.search(p.split(' ')[0] if p else ''))


def trim(src, dst, full):
    conns, events = parse(src)
    names = {c.num: classify(c) for c in conns}
    kept = []
    for ev in events:
        if ev['typ'] == 'READ' and READS.search(ev['payload']):
            kept.append(ev)
            continue
        if ev['typ'] not in MUTATING and ev['typ'] != 'WATCH_EVENT':
            continue
        if ev['typ'] == 'WRITE' and ev['payload'].startswith('/tool/xenio-lab/who') \
                and not ev['payload'].startswith('/tool/xenio-lab/who hotplug-script'):
            continue                             # (the hotplug script's runs stay visible)
        kept.append(ev)
    if not full:
        out, open_tx = [], {}
        for ev in kept:      # a transaction shows when something relevant happened inside it
            n = ev['conn'].num
            if ev['typ'] == 'TRANSACTION_START':
                open_tx[n] = [ev, False]
                continue
            if ev['typ'] == 'TRANSACTION_END':
                st = open_tx.pop(n, None)
                if st and st[1]:
                    out.append(ev)
                continue
            if relevant(ev, names):
                st = open_tx.get(n)
                if st and not st[1]:
                    st[1] = True
                    out.append(st[0])
                out.append(ev)
        kept = out
    step = [e['payload'].split(' ', 1)[1] for e in events
            if e['typ'] == 'WRITE' and e['payload'].startswith('/tool/xenio-lab/step')]
    used = sorted({e['conn'].num for e in kept})
    with open(dst, 'w') as f:
        name = os.path.basename(src)
        f.write(f'# {name}: {"every change" if full else "trimmed"} (lab/recordings/trim.py)\n')
        for s in step:
            f.write(f'# step: {s}\n')
        f.write('#\n# connections (numbered in order of appearance; "pre" = open before the recording):\n')
        for c in conns:
            if c.num in used:
                f.write(f'#   c{c.num:<3} {names[c.num]:<30} {c.count} requests{" (pre)" if c.pre else ""}\n')
        f.write('#\n#  t/s  conn                            request\n')
        for ev in kept:
            n = ev['conn'].num
            line = f'{ev["t"]:5d}  c{n:<3} {names[n][:26]:<27} {"tx " if ev["tx"] else "   "}{fmt(ev)}'
            if ev['err']:
                line += f'   -> {ev["err"]}'
            f.write(line.rstrip() + '\n')
    return len(kept), len(events)


def main(argv):
    full = '--all' in argv
    args = [a for a in argv if a != '--all']
    if len(args) != 2:
        sys.exit(__doc__)
    src, dst = args
    os.makedirs(dst, exist_ok=True)
    for n in sorted(os.listdir(src)):
        if n.endswith('.trace'):
            k, total = trim(os.path.join(src, n), os.path.join(dst, n[:-6] + '.txt'), full)
            print(f'{n}: {k} of {total} requests and events kept')


if __name__ == '__main__':
    main(sys.argv[1:])
