/**
 * Offline IP → country / autonomous system lookup. No network look-ups: the data comes from CSV
 * files the operator names, in the format of the @ip-location-db packages on npm
 * (`first,last,country` and `first,last,asn,organisation`; IPv4 or IPv6 addresses, or a CIDR in
 * the first column with the second left empty). Tests and private networks use small files of the
 * same shape, e.g. `127.0.0.0,127.0.0.255,JP`.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';

export interface Location {
  country?: string | undefined;
  asn?: number | undefined;
  org?: string | undefined;
}

interface Table<T> {
  v4: { starts: bigint[]; ends: bigint[]; values: T[] };
  v6: { starts: bigint[]; ends: bigint[]; values: T[] };
}

export class GeoDataError extends Error {
  override name = 'GeoDataError';
  readonly code = 'ERR_GEO_DATA';
}

/** An IPv4 or IPv6 address as an integer; IPv4-mapped IPv6 addresses count as IPv4. */
export function ipToBigInt(ip: string): { family: 4 | 6; value: bigint } | undefined {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  const addr = mapped ? mapped[1]! : ip;
  const family = isIP(addr);
  if (family === 4) {
    const v = addr.split('.').reduce((acc, part) => (acc << 8n) + BigInt(Number(part)), 0n);
    return { family: 4, value: v };
  }
  if (family !== 6) return undefined;
  let a = addr.toLowerCase().replace(/%.*$/, '');
  // A trailing dotted IPv4 part becomes two hextets.
  const v4tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (v4tail) {
    const n = ipToBigInt(v4tail[1]!)!.value;
    a = `${a.slice(0, -v4tail[1]!.length)}${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head = '', tail = ''] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const parts = a.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  return { family: 6, value: parts.reduce((acc, x) => (acc << 16n) + BigInt(Number.parseInt(x, 16)), 0n) };
}

function range(first: string, last: string): { family: 4 | 6; start: bigint; end: bigint } | undefined {
  if (first.includes('/')) {
    const [addr = '', bits = ''] = first.split('/');
    const ip = ipToBigInt(addr);
    if (!ip) return undefined;
    const width = ip.family === 4 ? 32n : 128n;
    const prefix = BigInt(Number(bits));
    if (prefix < 0n || prefix > width) return undefined;
    const host = (1n << (width - prefix)) - 1n;
    return { family: ip.family, start: ip.value & ~host, end: (ip.value & ~host) | host };
  }
  const a = ipToBigInt(first);
  const b = ipToBigInt(last);
  if (!a || !b || a.family !== b.family || b.value < a.value) return undefined;
  return { family: a.family, start: a.value, end: b.value };
}

function loadTable<T>(files: string[], parse: (cols: string[]) => T | undefined): Table<T> {
  const rows: Array<{ family: 4 | 6; start: bigint; end: bigint; value: T }> = [];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new GeoDataError(`cannot read ${file}: ${(err as Error).message}`);
    }
    let lineNo = 0;
    for (const line of text.split('\n')) {
      lineNo++;
      const trimmed = line.trim();
      if (!trimmed || trimmed.startsWith('#')) continue;
      const cols = trimmed.split(',').map((c) => c.trim().replace(/^"|"$/g, ''));
      const r = range(cols[0] ?? '', cols[1] ?? '');
      const value = parse(cols.slice(2));
      if (!r || value === undefined) {
        // A header line is fine; anything else is a broken file the operator must hear about.
        if (lineNo === 1) continue;
        throw new GeoDataError(`${file}:${lineNo}: not "first,last,…" with IP addresses`);
      }
      rows.push({ ...r, value });
    }
  }
  const table: Table<T> = {
    v4: { starts: [], ends: [], values: [] },
    v6: { starts: [], ends: [], values: [] },
  };
  rows.sort((x, y) => (x.start < y.start ? -1 : x.start > y.start ? 1 : 0));
  for (const r of rows) {
    const t = r.family === 4 ? table.v4 : table.v6;
    t.starts.push(r.start);
    t.ends.push(r.end);
    t.values.push(r.value);
  }
  return table;
}

function find<T>(table: Table<T>, ip: string): T | undefined {
  const n = ipToBigInt(ip);
  if (!n) return undefined;
  const t = n.family === 4 ? table.v4 : table.v6;
  // The last range starting at or before the address, if it also ends at or after it.
  let lo = 0;
  let hi = t.starts.length - 1;
  let at = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (t.starts[mid]! <= n.value) {
      at = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return at >= 0 && t.ends[at]! >= n.value ? t.values[at] : undefined;
}

export interface GeoLookup {
  locate(ip: string | undefined): Location;
}

export function createGeoLookup(o: { countryFiles: string[]; asnFiles: string[] }): GeoLookup {
  const countries = loadTable(o.countryFiles, ([cc]) =>
    cc && /^[A-Za-z]{2}$/.test(cc) ? cc.toUpperCase() : undefined,
  );
  const asns = loadTable(o.asnFiles, ([asn, ...org]) =>
    asn && /^(AS)?\d+$/i.test(asn)
      ? { asn: Number(asn.replace(/^AS/i, '')), org: org.join(',') || undefined }
      : undefined,
  );
  return {
    locate(ip) {
      if (!ip) return {};
      const as = find(asns, ip);
      return { country: find(countries, ip), asn: as?.asn, org: as?.org };
    },
  };
}

/** The network range a source belongs to: an IPv4 /24 or an IPv6 /48. */
export function networkRange(ip: string | undefined): string | undefined {
  if (!ip) return undefined;
  const n = ipToBigInt(ip);
  if (!n) return undefined;
  if (n.family === 4) {
    const v = n.value >> 8n;
    return `${(v >> 16n) & 255n}.${(v >> 8n) & 255n}.${v & 255n}.0/24`;
  }
  const top = n.value >> 80n;
  return `${[(top >> 32n) & 0xffffn, (top >> 16n) & 0xffffn, top & 0xffffn].map((x) => x.toString(16)).join(':')}::/48`;
}
