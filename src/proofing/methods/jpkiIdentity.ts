/**
 * Who a JPKI signing certificate (署名用電子証明書) names. Its subject CN is not the holder's name;
 * J-LIS puts the basic four facts (基本4情報) in subjectAltName as otherName entries under
 * 1.2.392.200149.8.5.5 (J-LIS certificate profile): .1 name, .2 positions of substitute characters
 * in the name, .3 gender, .4 date of birth, .5 address, .6 positions of substitute characters in the
 * address — each a string (UTF8String). The date of birth is `EYYYYMMDD`: an era digit, then the
 * Gregorian date; a date with unknown parts (zeros) is no date.
 *
 * @peculiar/x509 reads only the GUID and UPN kinds of otherName, so the extension is read here:
 * a small DER reader for exactly the GeneralNames structure (RFC 5280 §4.2.1.6).
 */

export const JPKI_SAN_OID = {
  name: '1.2.392.200149.8.5.5.1',
  gender: '1.2.392.200149.8.5.5.3',
  birthDate: '1.2.392.200149.8.5.5.4',
  address: '1.2.392.200149.8.5.5.5',
} as const;

export const SUBJECT_ALT_NAME_OID = '2.5.29.17';

export interface JpkiIdentity {
  name: string | undefined;
  /** YYYY-MM-DD, or undefined when absent or not a complete date. */
  birthDate: string | undefined;
}

/** The SAN is not DER of GeneralNames, or names a fact twice with different values. */
export class JpkiSanError extends Error {
  override name = 'JpkiSanError';
}

interface Tlv {
  tag: number;
  content: Uint8Array;
  /** Offset just after this element. */
  end: number;
}

function readTlv(buf: Uint8Array, at: number, limit: number): Tlv {
  if (at + 2 > limit) throw new JpkiSanError('truncated');
  const tag = buf[at]!;
  if ((tag & 0x1f) === 0x1f) throw new JpkiSanError('multi-byte tag');
  let length = buf[at + 1]!;
  let start = at + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    if (octets === 0 || octets > 3 || start + octets > limit) throw new JpkiSanError('bad length');
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + buf[start + i]!;
    start += octets;
  }
  const end = start + length;
  if (end > limit) throw new JpkiSanError('truncated');
  return { tag, content: buf.subarray(start, end), end };
}

/** The elements directly inside a constructed element's content. */
function children(content: Uint8Array): Tlv[] {
  const out: Tlv[] = [];
  for (let at = 0; at < content.length; ) {
    const tlv = readTlv(content, at, content.length);
    out.push(tlv);
    at = tlv.end;
  }
  return out;
}

function decodeOid(bytes: Uint8Array): string {
  const arcs: number[] = [];
  let value = 0;
  for (const b of bytes) {
    value = value * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      arcs.push(value);
      value = 0;
    }
  }
  if (arcs.length === 0 || bytes[bytes.length - 1]! & 0x80) throw new JpkiSanError('bad OID');
  const first = arcs.shift()!;
  const root = first < 80 ? Math.floor(first / 40) : 2;
  return [root, first - 40 * root, ...arcs].join('.');
}

const UTF8_STRING = 0x0c;
const PRINTABLE_STRING = 0x13;
const IA5_STRING = 0x16;
const strict = new TextDecoder('utf-8', { fatal: true });

/** An otherName value: `[0] EXPLICIT` around a string. */
function otherNameString(explicit: Tlv): string {
  if (explicit.tag !== 0xa0) throw new JpkiSanError('otherName value not [0]');
  const [inner, ...rest] = children(explicit.content);
  if (!inner || rest.length) throw new JpkiSanError('otherName value not one element');
  if (inner.tag !== UTF8_STRING && inner.tag !== PRINTABLE_STRING && inner.tag !== IA5_STRING)
    throw new JpkiSanError('otherName value not a string');
  try {
    return strict.decode(inner.content);
  } catch {
    throw new JpkiSanError('otherName value not UTF-8');
  }
}

/** `EYYYYMMDD` (or `YYYYMMDD`) → YYYY-MM-DD when it is a complete calendar date. */
export function jpkiBirthDate(value: string): string | undefined {
  const m = /^[0-9]?([0-9]{4})([0-9]{2})([0-9]{2})$/.exec(value.trim());
  if (!m) return undefined;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(Date.UTC(y, mo - 1, d));
  if (y === 0 || date.getUTCFullYear() !== y || date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d)
    return undefined;
  return `${m[1]}-${m[2]}-${m[3]}`;
}

/**
 * The otherName strings of a subjectAltName extension value (the extnValue's content), by OID.
 * Other kinds of name are skipped. A fact given twice with different values is refused.
 */
export function subjectAltOtherNames(extnValue: Uint8Array): Map<string, string> {
  const buf = extnValue;
  const top = readTlv(buf, 0, buf.length);
  if (top.tag !== 0x30 || top.end !== buf.length) throw new JpkiSanError('not a SEQUENCE');
  const out = new Map<string, string>();
  for (const gn of children(top.content)) {
    if (gn.tag !== 0xa0) continue; // otherName is [0] constructed; the other kinds do not name a person here
    const [typeId, value, ...rest] = children(gn.content);
    if (typeId?.tag !== 0x06 || !value || rest.length) throw new JpkiSanError('bad otherName');
    const oid = decodeOid(typeId.content);
    const text = otherNameString(value);
    const seen = out.get(oid);
    if (seen !== undefined && seen !== text) throw new JpkiSanError(`two values for ${oid}`);
    out.set(oid, text);
  }
  return out;
}

/** Name and birth date from a JPKI signing certificate's subjectAltName extension value. */
export function jpkiIdentity(extnValue: Uint8Array | undefined): JpkiIdentity {
  if (!extnValue) return { name: undefined, birthDate: undefined };
  const names = subjectAltOtherNames(extnValue);
  const birth = names.get(JPKI_SAN_OID.birthDate);
  return {
    name: names.get(JPKI_SAN_OID.name) || undefined,
    birthDate: birth === undefined ? undefined : jpkiBirthDate(birth),
  };
}
