/**
 * Offline IP → country / autonomous system / place lookup. No network look-ups: the data comes from
 * CSV files the operator names, in the format of the @ip-location-db packages on npm
 * (`first,last,country`, `first,last,asn,organisation` and the city layout
 * `first,last,country,state1,state2,city,postcode,latitude,longitude,timezone`; IPv4 or IPv6
 * addresses, or a CIDR in the first column with the second left empty). Tests and private networks
 * use small files of the same shape, e.g. `127.0.0.0,127.0.0.255,JP`. Without city data a place is
 * the country's centroid (config/country-centroids.csv), with that country's uncertainty.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { fileURLToPath } from 'node:url';

/** Where on earth, and how far off that may be (city coordinates: little; a country centroid: a lot). */
export interface Place {
  lat: number;
  lon: number;
  accuracyKm: number;
}

export interface Location {
  country?: string | undefined;
  asn?: number | undefined;
  org?: string | undefined;
  place?: Place | undefined;
}

/** The country centroids shipped with the hub (risk.geo.centroidsFile overrides). */
export const DEFAULT_CENTROIDS_FILE = fileURLToPath(
  new URL('../../config/country-centroids.csv', import.meta.url),
);

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

/** One CSV line's fields; double quotes may enclose commas (city names). */
function csvFields(line: string): string[] {
  if (!line.includes('"')) return line.split(',').map((c) => c.trim());
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (ch === '"') {
      if (quoted && line[i + 1] === '"') {
        cur += '"';
        i++;
      } else quoted = !quoted;
    } else if (ch === ',' && !quoted) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  out.push(cur.trim());
  return out;
}

function readData(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new GeoDataError(`cannot read ${file}: ${(err as Error).message}`);
  }
}

function loadTable<T>(files: string[], parse: (cols: string[]) => T | undefined): Table<T> {
  const rows: Array<{ family: 4 | 6; start: bigint; end: bigint; value: T }> = [];
  for (const file of files) {
    const text = readData(file);
    let lineNo = 0;
    for (const line of text.split('\n')) {
      lineNo++;
      const trimmed = line.trim();
      if (!trimmed || trimmed.startsWith('#')) continue;
      const cols = csvFields(trimmed);
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
  /** A country's centroid with its uncertainty, if the centroids file has it. */
  centroid(country: string | undefined): Place | undefined;
}

export interface GeoFiles {
  countryFiles: string[];
  asnFiles: string[];
  cityFiles?: string[] | undefined;
  centroidsFile?: string | undefined;
}

const coordinate = (v: string | undefined, max: number) => {
  const n = v === undefined || v === '' ? Number.NaN : Number(v);
  return Number.isFinite(n) && Math.abs(n) <= max ? n : undefined;
};

/** `country,latitude,longitude[,accuracy_km]` lines; `#` comments and a header are skipped. */
function loadCentroids(file: string, defaultAccuracyKm: number): Map<string, Place> {
  const out = new Map<string, Place>();
  let lineNo = 0;
  for (const line of readData(file).split('\n')) {
    lineNo++;
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const [cc = '', la, lo, acc] = csvFields(t);
    const lat = coordinate(la, 90);
    const lon = coordinate(lo, 180);
    const accuracy = acc ? coordinate(acc, 20_000) : defaultAccuracyKm;
    if (!/^[A-Z]{2}$/.test(cc) || lat === undefined || lon === undefined || accuracy === undefined) {
      if (cc === 'country') continue;
      throw new GeoDataError(`${file}:${lineNo}: not "country,latitude,longitude[,accuracy_km]"`);
    }
    out.set(cc, { lat, lon, accuracyKm: accuracy });
  }
  return out;
}

export function createGeoLookup(
  o: GeoFiles,
  accuracy: { cityKm: number; countryKm: number } = { cityKm: 50, countryKm: 500 },
): GeoLookup {
  const countries = loadTable(o.countryFiles, ([cc]) =>
    cc && /^[A-Za-z]{2}$/.test(cc) ? cc.toUpperCase() : undefined,
  );
  const asns = loadTable(o.asnFiles, ([asn, ...org]) =>
    asn && /^(AS)?\d+$/i.test(asn)
      ? { asn: Number(asn.replace(/^AS/i, '')), org: org.join(',') || undefined }
      : undefined,
  );
  // first,last | country,state1,state2,city,postcode,latitude,longitude[,timezone]
  const cities = loadTable(o.cityFiles ?? [], (c) => {
    const lat = coordinate(c[5], 90);
    const lon = coordinate(c[6], 180);
    if (lat === undefined || lon === undefined) return undefined;
    const cc = c[0] && /^[A-Za-z]{2}$/.test(c[0]) ? c[0].toUpperCase() : undefined;
    return { country: cc, place: { lat, lon, accuracyKm: accuracy.cityKm } };
  });
  const centroids = loadCentroids(o.centroidsFile ?? DEFAULT_CENTROIDS_FILE, accuracy.countryKm);
  const centroid = (country: string | undefined) => (country ? centroids.get(country) : undefined);
  return {
    locate(ip) {
      if (!ip) return {};
      const as = find(asns, ip);
      const city = cities.v4.starts.length + cities.v6.starts.length ? find(cities, ip) : undefined;
      const country = find(countries, ip) ?? city?.country;
      return { country, asn: as?.asn, org: as?.org, place: city?.place ?? centroid(country) };
    },
    centroid,
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
