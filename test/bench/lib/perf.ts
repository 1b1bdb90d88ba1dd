/**
 * On-CPU profiling of the hub with Linux `perf` (BENCH_PERF=1): `perf record -e task-clock -g -p <hub>`
 * during a phase's measured window, JavaScript frames named through `node --perf-basic-prof`.
 *
 * Why not only `node --cpu-prof`: V8's profiler samples wall-clock time, so when the hub shares two cores
 * with Postgres and the load generator, every socket write that wakes Postgres and gets the hub
 * preempted is billed to `writev`. task-clock samples count only time on a CPU.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export function perfAvailable(): boolean {
  try {
    execFileSync('perf', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export interface PerfRecording {
  stop(): Promise<void>;
}

export function startPerfRecord(pid: number, file: string): PerfRecording {
  const child: ChildProcess = spawn(
    'perf',
    ['record', '-q', '-e', 'task-clock', '-F', '999', '-g', '-p', String(pid), '-o', file],
    { stdio: 'ignore' },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    async stop() {
      child.kill('SIGINT');
      await exited;
    },
  };
}

export interface PerfRow {
  name: string;
  pct: number;
}
export interface PerfSummary {
  samples: number;
  /** Share of samples on the hub's main (event-loop) thread; the rest are GC, JIT and libuv helpers. */
  mainThreadPct: number;
  /** Samples grouped by what the work is for (first matching rule from the innermost frame out). */
  buckets: PerfRow[];
  /** Innermost JavaScript frame's package or source folder (native work it called included). */
  areas: PerfRow[];
  /** Innermost JavaScript function (native work it called included). */
  functions: PerfRow[];
}

const BUCKETS: Array<[string, string[]]> = [
  [
    'DB: the Postgres driver (postgres.js; pg for older runs) and its socket I/O',
    [
      'node_modules/postgres/',
      'node_modules/pg/',
      'node_modules/pg-pool/',
      'node_modules/pg-protocol/',
      'node_modules/pg-types',
      'src/db/',
    ],
  ],
  [
    'signed cookies (cookies, keygrip, tsscmp)',
    ['node_modules/cookies/', 'node_modules/keygrip/', 'node_modules/tsscmp/'],
  ],
  [
    'passkey verification (@simplewebauthn & co)',
    ['@simplewebauthn', 'asn1', 'cbor', '@hexagon', '@levischuck', '@peculiar'],
  ],
  ['JOSE (jose)', ['node_modules/jose/']],
  ['DPoP at the resource server (src/api/dpop.ts)', ['src/api/dpop']],
  ['HTML pages (src/web)', ['src/web/pages', 'src/web/html', 'src/web/i18n']],
  ['WebCrypto called by anything else', ['node:internal/crypto/webcrypto']],
  ['node:crypto called by anything else', ['node:internal/crypto/']],
];

function jsLocation(frame: string): string | undefined {
  const i = frame.indexOf('JS:');
  if (i < 0) return undefined;
  const m = /(?:file:\/\/)?(\/[^\s:]+|node:[^\s:]+)/.exec(frame.slice(i));
  return m?.[1];
}

function areaOf(loc: string, root: string): string {
  if (loc.startsWith('node:'))
    return loc.split('/').slice(0, 2).join('/').replace('node:internal', 'node:internal');
  const nm = loc.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = loc.slice(nm + 'node_modules/'.length).split('/');
    return `npm ${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  const rel = loc.startsWith(`${root}/`) ? loc.slice(root.length + 1) : loc;
  const parts = rel.split('/');
  return parts[0] === 'src' && parts.length > 2 ? `src/${parts[1]}` : rel;
}

function functionOf(frame: string): string {
  const i = frame.indexOf('JS:');
  return frame
    .slice(i + 3)
    .replace(/^[*+^~]?'?/, '')
    .replace(/\+0x[0-9a-f]+ \(.*$/, '')
    .replace(/file:\/\//, '');
}

function noJsKind(thread: string, stack: string): string {
  if (thread !== 'MainThread')
    // libuv's pool threads are named libuv-worker; V8's platform threads (V8Worker: parallel
    // scavenges, concurrent marking, background compilation) are not the pool.
    return `helper threads (${/libuv/i.test(thread) ? 'libuv pool' : 'V8 GC/JIT'})`;
  if (/Heap|Scaveng|MarkCompact|Sweeper|GCTracer/.test(stack)) return 'main thread: GC';
  if (/Compile|Maglev|Turbofan|compiler/.test(stack)) return 'main thread: JIT';
  if (/TLSWrap|SSL_|ssl3_|tls1_/.test(stack)) return 'main thread: TLS records (no JS)';
  return 'main thread: libuv/kernel/malloc (no JS)';
}

/** Runs `perf script` on a recording and summarizes it. */
export async function summarizePerf(file: string, root: string, top = 20): Promise<PerfSummary> {
  const child = spawn('perf', ['script', '-i', file], { stdio: ['ignore', 'pipe', 'ignore'] });
  const rl = createInterface({ input: child.stdout! });
  const buckets = new Map<string, number>();
  const areas = new Map<string, number>();
  const functions = new Map<string, number>();
  const add = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  let samples = 0;
  let main = 0;
  let thread = '';
  let frames: string[] = [];
  const flush = () => {
    if (!thread) return;
    samples += 1;
    if (thread === 'MainThread') main += 1;
    const inner = frames.find((f) => f.includes('JS:'));
    // Rules in order over the whole stack: the library on whose behalf the work runs wins over the
    // primitive it calls (an HMAC for a cookie signature counts as cookies, not as crypto).
    let bucket = BUCKETS.find(([, pats]) => frames.some((f) => pats.some((p) => f.includes(p))))?.[0];
    const stack = frames.join('\n');
    if (!bucket) {
      if (stack.includes('node_modules/oidc-provider/')) bucket = 'oidc-provider (rest)';
      else if (/node_modules\/(koa|@koa|delegates|cookies)|_http_|src\//.test(stack))
        bucket = 'koa, node:http, our code (rest)';
      else if (inner) bucket = 'other JavaScript';
      else bucket = noJsKind(thread, stack);
    }
    add(buckets, bucket);
    if (inner) {
      const loc = jsLocation(inner);
      add(areas, loc ? areaOf(loc, root) : 'JS (unknown)');
      add(functions, functionOf(inner).replace(`${root}/`, ''));
    } else add(areas, noJsKind(thread, stack));
    thread = '';
    frames = [];
  };
  for await (const line of rl) {
    if (line === '') flush();
    else if (!line.startsWith('\t') && !line.startsWith(' ')) {
      flush();
      thread = line.slice(0, line.search(/\s+\d+\s/)).trim() || 'unknown';
    } else frames.push(line.trim());
  }
  flush();
  const rows = (m: Map<string, number>, n: number) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, c]) => ({ name, pct: Math.round((1000 * c) / Math.max(1, samples)) / 10 }));
  return {
    samples,
    mainThreadPct: Math.round((1000 * main) / Math.max(1, samples)) / 10,
    buckets: rows(buckets, 30),
    areas: rows(areas, top),
    functions: rows(functions, top),
  };
}

export function formatPerf(name: string, s: PerfSummary): string {
  const table = (title: string, rows: PerfRow[]) => [
    `${title}:`,
    '',
    '| % of hub CPU | what |',
    '|---:|---|',
    ...rows.map((r) => `| ${r.pct} | \`${r.name.replace(/\|/g, '\\|')}\` |`),
    '',
  ];
  return [
    `#### Hub on-CPU profile, ${name} (perf task-clock, ${s.samples} samples, ${s.mainThreadPct}% on the main thread)`,
    '',
    ...table('By purpose', s.buckets),
    ...table('By innermost JavaScript package/folder', s.areas),
    ...table('By innermost JavaScript function', s.functions),
  ].join('\n');
}
