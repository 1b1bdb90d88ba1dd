/**
 * Summarizes a V8 .cpuprofile (from `node --cpu-prof`): self and inclusive time per function and
 * self time per package / source area. Also runnable by itself:
 *   node test/bench/lib/profile.ts <file.cpuprofile> [top]
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileRow {
  name: string;
  ms: number;
  pct: number;
}
export interface ProfileSummary {
  /** Sampled time that was not idle, ms. */
  busyMs: number;
  idleMs: number;
  selfByFunction: ProfileRow[];
  inclusiveByFunction: ProfileRow[];
  selfByArea: ProfileRow[];
}

const SPECIAL = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

function location(url: string, root: string): string {
  let u = url.replace(/^file:\/\//, '');
  if (u.startsWith(root)) u = u.slice(root.length + 1);
  return u;
}

/** Where a function lives: an npm package, one of our folders, Node internals or V8. */
function area(url: string, fn: string, root: string): string {
  if (SPECIAL.has(fn) && !url) return fn;
  if (!url) return '(native / V8 builtins)';
  if (url.startsWith('node:')) return 'node: internals';
  const u = location(url, root);
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = u.slice(nm + 'node_modules/'.length).split('/');
    return `npm ${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  const parts = u.split('/');
  return parts[0] === 'src' && parts.length > 2 ? `src/${parts[1]}` : u;
}

export function summarizeProfile(file: string, root: string, top = 25): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const keyOf = (n: ProfileNode) => {
    const f = n.callFrame;
    if (SPECIAL.has(f.functionName) && !f.url) return f.functionName;
    return `${f.functionName || '(anonymous)'} ${location(f.url, root) || '(native)'}:${f.lineNumber + 1}`;
  };
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  const areas = new Map<string, number>();
  let idle = 0;
  let busy = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (p.timeDeltas[i + 1] ?? p.timeDeltas[i] ?? 0) / 1000;
    const node = byId.get(p.samples[i]!);
    if (!node) continue;
    const k = keyOf(node);
    if (k === '(idle)') {
      idle += dt;
      continue;
    }
    busy += dt;
    self.set(k, (self.get(k) ?? 0) + dt);
    const a = area(node.callFrame.url, node.callFrame.functionName, root);
    areas.set(a, (areas.get(a) ?? 0) + dt);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const n = byId.get(id)!;
      const key = keyOf(n);
      if (key === '(root)' || seen.has(key)) continue;
      seen.add(key);
      incl.set(key, (incl.get(key) ?? 0) + dt);
    }
  }
  const rows = (m: Map<string, number>, n: number) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, ms]) => ({ name, ms: Math.round(ms), pct: Math.round((1000 * ms) / busy) / 10 }));
  return {
    busyMs: Math.round(busy),
    idleMs: Math.round(idle),
    selfByFunction: rows(self, top),
    inclusiveByFunction: rows(incl, top),
    selfByArea: rows(areas, top),
  };
}

export function formatProfile(s: ProfileSummary): string {
  const table = (title: string, rows: ProfileRow[]) =>
    [
      `#### ${title}`,
      '',
      '| ms | % of busy | function / area |',
      '|---:|---:|---|',
      ...rows.map((r) => `| ${r.ms} | ${r.pct} | \`${r.name}\` |`),
      '',
    ].join('\n');
  return [
    `Busy (non-idle) samples: ${s.busyMs} ms, idle ${s.idleMs} ms.`,
    '',
    table('Self time by area', s.selfByArea),
    table('Self time by function', s.selfByFunction),
    table('Inclusive time by function', s.inclusiveByFunction),
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node test/bench/lib/profile.ts <file.cpuprofile> [top]');
    process.exit(2);
  }
  console.log(formatProfile(summarizeProfile(file, process.cwd(), Number(process.argv[3] ?? 30))));
}
