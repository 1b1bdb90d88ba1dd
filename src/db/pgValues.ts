/**
 * Parameters and result values exactly as node-postgres (`pg` 8 with pg-types 2) gave them, for the
 * postgres.js driver (src/db/postgres.ts). The code base was written against pg's conversions, and
 * postgres.js differs: it declares parameter types from JS values (a Date becomes timestamptz even
 * where the server would read a date), re-encodes strings bound to json/bool/date/bytea parameters
 * (JSON.stringify of a JSON text, `new Date(x)` of a timestamp text), reads `date` as UTC midnight
 * and `infinity` as an invalid Date, and reads NULL array elements as the string 'NULL'.
 */

/**
 * A parameter as pg sends it: text (or NULL) in the server's input syntax, so every parameter is
 * declared `unknown` and the server infers its type from the statement, as it did with pg.
 */
export function toParam(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value !== 'object') return String(value);
  // pg sends a Buffer in binary; as text a bytea parameter reads the same bytes from hex.
  if (ArrayBuffer.isView(value)) return `\\x${bytesOf(value).toString('hex')}`;
  if (value instanceof Date) return dateToString(value);
  if (Array.isArray(value)) return arrayLiteral(value);
  return JSON.stringify(value);
}

function bytesOf(view: ArrayBufferView): Buffer {
  return Buffer.isBuffer(view) ? view : Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}

function arrayLiteral(values: unknown[]): string {
  const parts = values.map((v) => {
    if (v === null || v === undefined) return 'NULL';
    if (Array.isArray(v)) return arrayLiteral(v);
    if (ArrayBuffer.isView(v)) return `\\\\x${bytesOf(v).toString('hex')}`;
    return `"${(toParam(v) as string).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  });
  return `{${parts.join(',')}}`;
}

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

/** Local time with its UTC offset, as pg's `dateToString` (a `date` parameter reads the local day). */
function dateToString(date: Date): string {
  let offset = -date.getTimezoneOffset();
  let year = date.getFullYear();
  const bc = year < 1;
  if (bc) year = Math.abs(year) + 1;
  let text = `${pad(year, 4)}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(
    date.getMinutes(),
  )}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  text += offset < 0 ? '-' : '+';
  offset = Math.abs(offset);
  text += `${pad(Math.floor(offset / 60))}:${pad(offset % 60)}`;
  return bc ? `${text} BC` : text;
}

const DATE_TIME = /(\d{1,})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(\.\d{1,})?.*?( BC)?$/;
const DATE_ONLY = /^(\d{1,})-(\d{2})-(\d{2})( BC)?$/;
const TIME_ZONE = /([Z+-])(\d{2})?:?(\d{2})?:?(\d{2})?/;

/**
 * timestamptz, timestamp and date as pg-types (postgres-date): a Date, in local time when the text
 * has no offset (so a `date` is local midnight), and ±Infinity for ±infinity.
 */
export function parseTimestamp(text: string): Date | number | null {
  if (text === 'infinity') return Number.POSITIVE_INFINITY;
  if (text === '-infinity') return Number.NEGATIVE_INFINITY;
  const m = DATE_TIME.exec(text);
  if (!m) {
    const d = DATE_ONLY.exec(text);
    if (!d) return null;
    const year = yearOf(d[1] as string, Boolean(d[4]));
    const date = new Date(year, Number(d[2]) - 1, Number(d[3]));
    if (year >= 0 && year < 100) date.setFullYear(year);
    return date;
  }
  const year = yearOf(m[1] as string, Boolean(m[8]));
  const fields = [Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])] as const;
  const ms = m[7] ? 1000 * Number.parseFloat(m[7]) : 0;
  const offset = offsetMs(text);
  if (offset === undefined) {
    const date = new Date(year, ...fields, ms);
    if (year >= 0 && year < 100) date.setFullYear(year);
    return date;
  }
  const date = new Date(Date.UTC(year, ...fields, ms));
  if (year >= 0 && year < 100) date.setUTCFullYear(year);
  if (offset) date.setTime(date.getTime() - offset);
  return date;
}

function yearOf(digits: string, bc: boolean): number {
  const year = Number.parseInt(digits, 10);
  return bc ? -(year - 1) : year;
}

/** The UTC offset of a timestamp text ("… 03:04:05.1+09", "…-03:30", "…Z"), in ms; none without one. */
function offsetMs(text: string): number | undefined {
  if (text.endsWith('+00')) return 0;
  const z = TIME_ZONE.exec(text.split(' ')[1] ?? '');
  if (!z) return undefined;
  if (z[1] === 'Z') return 0;
  const sign = z[1] === '-' ? -1 : 1;
  return sign * (Number(z[2]) * 3600 + Number(z[3] ?? 0) * 60 + Number(z[4] ?? 0)) * 1000;
}

const parseBool = (text: string) => text === 't' || text === 'true';
const parseBytea = (text: string) => Buffer.from(text.slice(2), 'hex');

/**
 * A one- or multi-dimensional array literal, as postgres-array: unquoted NULL is null, a quoted
 * "NULL" is the text NULL, and each other element goes through `element`.
 */
export function parseArray<T>(text: string, element: (text: string) => T): Array<T | null | unknown[]> {
  let i = text.startsWith('[') ? text.indexOf('=') + 1 : 0;
  const read = (): Array<T | null | unknown[]> => {
    const out: Array<T | null | unknown[]> = [];
    i++; // {
    while (i < text.length) {
      const c = text[i];
      if (c === '}') {
        i++;
        return out;
      }
      if (c === ',') {
        i++;
      } else if (c === '{') {
        out.push(read());
      } else if (c === '"') {
        let value = '';
        for (i++; text[i] !== '"'; i++) value += text[i] === '\\' ? text[++i] : text[i];
        i++;
        out.push(element(value));
      } else {
        let end = i;
        while (text[end] !== ',' && text[end] !== '}') end++;
        const raw = text.slice(i, end);
        out.push(raw === 'NULL' ? null : element(raw));
        i = end;
      }
    }
    return out;
  };
  return read();
}

const same = (text: string) => text;
const arrayOf =
  <T>(element: (text: string) => T) =>
  (text: string) =>
    parseArray(text, element);

/**
 * postgres.js `types`: the parsers pg-types 2 registers (types it does not list stay text, as with
 * pg), and serializers that pass through the text `toParam` made (postgres.js would re-encode it).
 */
export const pgCompatibleTypes = {
  bool: { to: 16, from: [16], serialize: same, parse: parseBool },
  bytea: { to: 17, from: [17], serialize: same, parse: parseBytea },
  json: { to: 114, from: [114, 3802], serialize: same, parse: (t: string) => JSON.parse(t) },
  timestamp: { to: 1184, from: [1082, 1114, 1184], serialize: same, parse: parseTimestamp },
  boolArray: { to: 1000, from: [1000], serialize: same, parse: arrayOf(parseBool) },
  byteaArray: { to: 1001, from: [1001], serialize: same, parse: arrayOf(parseBytea) },
  intArray: {
    to: 1007,
    from: [1005, 1007, 1028],
    serialize: same,
    parse: arrayOf((t) => Number.parseInt(t, 10)),
  },
  floatArray: { to: 1022, from: [1021, 1022, 1231], serialize: same, parse: arrayOf(Number.parseFloat) },
  textArray: {
    to: 1009,
    from: [1008, 1009, 1014, 1015, 1016, 1040, 1041, 651, 3907, 2951, 791, 1183, 1270],
    serialize: same,
    parse: arrayOf(same),
  },
  timestampArray: { to: 1185, from: [1115, 1182, 1185], serialize: same, parse: arrayOf(parseTimestamp) },
  jsonArray: { to: 199, from: [199, 3807], serialize: same, parse: arrayOf((t) => JSON.parse(t)) },
};
