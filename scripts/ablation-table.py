import json,sys,glob,re,os,statistics as st
# The ablation table of docs/algorithms.md from run directories and their ablate logs:
#   python scripts/ablation-table.py runs/ablate-a.log ... -- runs/ablate-a/espo-seed0 ...
# (peak memory from the logs' "peak ... MiB over the training steps" lines).
# usage: phases.py LOG... -- RUN_DIR...
args=sys.argv[1:]; i=args.index('--'); logs=args[:i]; dirs=args[i+1:]
peak={}
for lg in logs:
    last=None
    for line in open(lg,errors='replace'):
        m=re.search(r'peak ([0-9.]+) MiB over the training steps',line)
        if m: last=float(m.group(1))
        m=re.search(r'done: \d+ steps; checkpoints in (\S+)',line)
        if m and last is not None: peak[os.path.abspath(m.group(1))]=last; last=None
rows={}
for d in dirs:
    cfg=open(os.path.join(d,'config.toml')).read()
    m=re.search(r'\[algorithm\]\s*\nname = "(\w+)"',cfg) or re.search(r'\[estimator\]\s*\nkind = "(\w+)"',cfg)
    name=m.group(1)
    ms=[json.loads(l) for l in open(os.path.join(d,'metrics.jsonl'))]
    ev=[json.loads(l) for l in open(os.path.join(d,'eval.jsonl'))]
    def p1(e):
        c=e['correct']; n=e.get('samples',2)
        return 100*sum(x[1] for x in c)/(len(c)*2)
    r=[x['reward'] for x in ms]
    rows.setdefault(name,[]).append(dict(
        steps=len(ms), r0=st.mean(r[:10]), r1=st.mean(r[-10:]),
        v0=p1(ev[0]), v1=p1(ev[-1]) if len(ev)>1 else float('nan'),
        roll=st.mean(x['rollout_seconds'] for x in ms), rew=st.mean(x['reward_seconds'] for x in ms),
        upd=st.mean(x['update_seconds'] for x in ms), peak=peak.get(os.path.abspath(d))))
print("| method | seeds | steps | reward, first 10 → last 10 steps | val pass@1 start → end | change per seed (points) | mean change | s/step: rollout / reward / update | peak MiB |")
print("|---|---|---|---|---|---|---|---|---|")
for name,rs in rows.items():
    ch=[x['v1']-x['v0'] for x in rs]
    sd=lambda v: (st.stdev(v) if len(v)>1 else 0.0)
    pk=[x['peak'] for x in rs if x['peak']]
    print(f"| {name} | {len(rs)} | {rs[0]['steps']} | {st.mean(x['r0'] for x in rs):.2f} → {st.mean(x['r1'] for x in rs):.2f} | {st.mean(x['v0'] for x in rs):.1f} → {st.mean(x['v1'] for x in rs):.1f} % | {' / '.join('%+.1f'%c for c in ch)} | {st.mean(ch):+.1f} ± {sd(ch):.1f} | {st.mean(x['roll'] for x in rs):.1f} / {st.mean(x['rew'] for x in rs):.1f} / {st.mean(x['upd'] for x in rs):.1f} | {('%.0f'%max(pk)) if pk else '–'} |")
