/**
 * The `Db` contract both implementations keep (src/db/types.ts), and on PostgreSQL that the
 * postgres.js driver reads and binds values exactly as node-postgres did (the code base was written
 * against pg's conversions; `pg` is still a test dependency, so it is the reference here).
 */
import { isDeepStrictEqual } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestDb, testDb } from '../support/db.ts';

let t: TestDb;
beforeAll(async () => {
  t = await testDb();
});
afterAll(() => t.close());

/** Rows of `sql` as pg's own client returns them, on the same database. */
async function viaPg(sql: string, params: unknown[]): Promise<Record<string, unknown>[]> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: t.url });
  await client.connect();
  try {
    return (await client.query(sql, params)).rows;
  } finally {
    await client.end();
  }
}

/** Columns whose values differ between this Db and pg (none, when the driver matches pg). */
async function differencesFromPg(sql: string, params: unknown[] = []): Promise<string[]> {
  const ours = (await t.db.query(sql, params)).rows;
  const theirs = await viaPg(sql, params);
  expect(ours).toHaveLength(theirs.length);
  return theirs.flatMap((row, i) =>
    Object.keys(row)
      .filter((k) => !isDeepStrictEqual(ours[i]?.[k], row[k]))
      .map((k) => `${i}.${k}`),
  );
}

const bytes = (v: unknown) => Buffer.from(v as Uint8Array);

const READ_TYPES = `SELECT '2024-01-02 03:04:05.123+09'::timestamptz AS tz, '2024-01-02 03:04:05.5'::timestamp AS ts,
  '2024-01-02'::date AS d, 'infinity'::timestamptz AS inf, 9007199254740993::int8 AS big, 12.345::numeric AS num,
  '{"a":[1,"x"]}'::jsonb AS jb, '[true]'::json AS j, ARRAY['a', NULL, 'NULL', 'b"c', '']::text[] AS texts,
  ARRAY[[1, 2], [3, NULL]]::int[] AS ints, ARRAY[7]::int8[] AS bigs, true AS yes, '\\x00ff'::bytea AS raw,
  2::int2 AS small, 1.5::float8 AS float, ARRAY['2024-01-02'::date] AS days, NULL::text AS nothing`;

describe('values', () => {
  it('reads each type as the code base expects', async () => {
    const { rows } = await t.db.query<Record<string, unknown>>(READ_TYPES);
    const r = rows[0] as Record<string, unknown>;
    expect(r.tz).toEqual(new Date('2024-01-01T18:04:05.123Z'));
    expect(r.ts).toEqual(new Date(2024, 0, 2, 3, 4, 5, 500));
    expect(r.d).toBeInstanceOf(Date);
    expect(r.inf).toBe(Number.POSITIVE_INFINITY);
    expect(String(r.big)).toBe('9007199254740993');
    expect(r.num).toBe('12.345');
    expect(r.jb).toEqual({ a: [1, 'x'] });
    expect(r.j).toEqual([true]);
    expect(r.texts).toEqual(['a', null, 'NULL', 'b"c', '']);
    expect(r.ints).toEqual([
      [1, 2],
      [3, null],
    ]);
    expect(r.yes).toBe(true);
    expect(bytes(r.raw)).toEqual(Buffer.from([0, 255]));
    expect(r.small).toBe(2);
    expect(r.float).toBe(1.5);
    expect(r.nothing).toBeNull();
    if (t.db.kind === 'pg') {
      // pg's own conversions (PGlite gives bigint for int8 and Uint8Array for bytea; its callers cope).
      expect(r.big).toBe('9007199254740993');
      expect(r.bigs).toEqual(['7']);
      expect(Buffer.isBuffer(r.raw)).toBe(true);
      expect(r.d).toEqual(new Date(2024, 0, 2));
      expect(r.days).toEqual([new Date(2024, 0, 2)]);
      expect(Array.isArray(rows) && Object.getPrototypeOf(rows) === Array.prototype).toBe(true);
      expect(await differencesFromPg(READ_TYPES)).toEqual([]);
    }
  });

  const BIND = `SELECT $1::timestamptz AS at, $2::date AS day, $3::text AS num_as_text, $4::int AS num_as_int,
    $5::bool AS flag, $6::bytea AS raw, $7::jsonb AS json_text, $8::jsonb AS json_object, $9::text AS missing,
    $10::timestamptz[] AS ats, $11::numeric AS num, $12::int8[] AS bigs, $13::text[] AS texts`;
  const bindParams = () => [
    new Date('2024-05-06T07:08:09.010Z'),
    new Date(2024, 4, 6),
    7,
    '42',
    false,
    Buffer.from([1, 2, 255]),
    '{"k":[1,2]}',
    { a: ['b', null] },
    undefined,
    [new Date(0), null],
    1.25,
    ['9007199254740993', 2],
    ['x', null, 'y,z', 'q"\\'],
  ];

  it('binds parameters as pg did: Date, numbers, booleans, Buffers, JSON text and objects, arrays', async () => {
    const { rows } = await t.db.query<Record<string, unknown>>(BIND, bindParams());
    const r = rows[0] as Record<string, unknown>;
    expect(r.at).toEqual(new Date('2024-05-06T07:08:09.010Z'));
    expect(r.num_as_text).toBe('7');
    expect(r.num_as_int).toBe(42);
    expect(r.flag).toBe(false);
    expect(bytes(r.raw)).toEqual(Buffer.from([1, 2, 255]));
    expect(r.json_text).toEqual({ k: [1, 2] });
    expect(r.json_object).toEqual({ a: ['b', null] });
    expect(r.missing).toBeNull();
    expect(r.ats).toEqual([new Date(0), null]);
    expect(r.num).toBe('1.25');
    expect(r.texts).toEqual(['x', null, 'y,z', 'q"\\']);
    if (t.db.kind === 'pg') {
      // A Date bound to a date is its local day, as pg sent it (local time with offset).
      expect(r.day).toEqual(new Date(2024, 4, 6));
      expect(await differencesFromPg(BIND, bindParams())).toEqual([]);
    }
  });

  it('matches a text array parameter with = ANY($1::text[])', async () => {
    await t.db.exec(`CREATE TABLE driver_names (name text PRIMARY KEY, n int NOT NULL);
      INSERT INTO driver_names VALUES ('a', 1), ('b,c', 2), ('d"e', 3), ('f', 4)`);
    const { rows } = await t.db.query<{ name: string }>(
      'SELECT name FROM driver_names WHERE name = ANY($1::text[]) ORDER BY name',
      [['b,c', 'd"e', 'f', 'zz']],
    );
    expect(rows.map((r) => r.name)).toEqual(['b,c', 'd"e', 'f']);
    const none = await t.db.query('SELECT name FROM driver_names WHERE name = ANY($1::text[])', [[]]);
    expect(none.rows).toEqual([]);
    // A number bound to an int column and a string to an int comparison, as pg allowed both.
    const byNumber = await t.db.query<{ name: string }>('SELECT name FROM driver_names WHERE n = $1', [2]);
    const byText = await t.db.query<{ name: string }>('SELECT name FROM driver_names WHERE n = $1', ['2']);
    expect(byNumber.rows).toEqual([{ name: 'b,c' }]);
    expect(byText.rows).toEqual([{ name: 'b,c' }]);
  });
});

describe('statements', () => {
  it('counts rows inserted, updated, deleted and returned', async () => {
    await t.db.exec('CREATE TABLE driver_counts (id int PRIMARY KEY, v text)');
    expect((await t.db.query("INSERT INTO driver_counts VALUES (1, 'a'), (2, 'b'), (3, 'c')")).rowCount).toBe(
      3,
    );
    expect((await t.db.query("UPDATE driver_counts SET v = 'z' WHERE id <= $1", [2])).rowCount).toBe(2);
    expect((await t.db.query('DELETE FROM driver_counts WHERE id = $1', [3])).rowCount).toBe(1);
    expect((await t.db.query('INSERT INTO driver_counts VALUES (1) ON CONFLICT DO NOTHING')).rowCount).toBe(
      0,
    );
    const selected = await t.db.query('SELECT * FROM driver_counts ORDER BY id');
    expect(selected.rowCount).toBe(2);
    expect(selected.rows).toEqual([
      { id: 1, v: 'z' },
      { id: 2, v: 'z' },
    ]);
    const returned = await t.db.query<{ id: number }>('DELETE FROM driver_counts RETURNING id');
    expect(returned.rowCount).toBe(2);
    expect(returned.rows.map((r) => r.id).sort()).toEqual([1, 2]);
  });

  it('reports SQLSTATE codes (and the constraint) on errors', async () => {
    await t.db.exec('CREATE TABLE driver_unique (id text CONSTRAINT driver_unique_pk PRIMARY KEY)');
    await t.db.query('INSERT INTO driver_unique VALUES ($1)', ['x']);
    await expect(t.db.query('INSERT INTO driver_unique VALUES ($1)', ['x'])).rejects.toMatchObject({
      code: '23505',
      constraint: 'driver_unique_pk',
    });
    await expect(t.db.query('SELECT $1::int', ['not a number'])).rejects.toMatchObject({ code: '22P02' });
    // The pool is usable after errors, and so is a transaction that failed on a constraint.
    await expect(
      t.db.transaction((tx) => tx.query('INSERT INTO driver_unique VALUES ($1), ($1)', ['y'])),
    ).rejects.toMatchObject({ code: '23505' });
    expect((await t.db.query('SELECT id FROM driver_unique')).rows).toEqual([{ id: 'x' }]);
  });

  it('runs a script of two statements with exec, inside and outside a transaction', async () => {
    await t.db.exec('CREATE TABLE driver_script (n int); INSERT INTO driver_script VALUES (1), (2)');
    await t.db.transaction((tx) =>
      tx.exec('INSERT INTO driver_script VALUES (3); DELETE FROM driver_script WHERE n = 1'),
    );
    const { rows } = await t.db.query<{ n: number }>('SELECT n FROM driver_script ORDER BY n');
    expect(rows.map((r) => r.n)).toEqual([2, 3]);
  });
});

describe('transactions', () => {
  it('runs afterCommit callbacks only after COMMIT, never after a rollback', async () => {
    await t.db.exec('CREATE TABLE driver_tx (n int)');
    const ran: string[] = [];
    const result = await t.db.transaction(async (tx) => {
      // Statements issued together inside a transaction (pipelined by the driver) all apply.
      await Promise.all([1, 2, 3].map((n) => tx.query('INSERT INTO driver_tx VALUES ($1)', [n])));
      tx.afterCommit(() => ran.push('committed'));
      expect(ran).toEqual([]);
      return 'result';
    });
    expect(result).toBe('result');
    expect(ran).toEqual(['committed']);

    await expect(
      t.db.transaction(async (tx) => {
        await tx.query('INSERT INTO driver_tx VALUES (4)');
        tx.afterCommit(() => ran.push('rolled back'));
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(ran).toEqual(['committed']);
    const { rows } = await t.db.query<{ n: number }>('SELECT n FROM driver_tx ORDER BY n');
    expect(rows.map((r) => r.n)).toEqual([1, 2, 3]);

    t.db.afterCommit(() => ran.push('at once'));
    expect(ran).toEqual(['committed', 'at once']);
  });
});

describe('a failed statement inside a transaction', () => {
  it('fails the transaction even when fn catches it, and runs no afterCommit callback', async () => {
    let ran = false;
    await expect(
      t.db.transaction(async (tx) => {
        await tx.query('SELECT $1::int', ['not a number']).catch(() => {});
        tx.afterCommit(() => {
          ran = true;
        });
        return 'returned';
      }),
    ).rejects.toMatchObject({ code: expect.stringMatching(/^(22P02|25P02)$/) });
    expect(ran).toBe(false);
  });
});

/** Terminates this database's other backends (idle pool connections, a listener), as a server loss. */
async function terminateOtherBackends(filter = 'true'): Promise<number> {
  const rows = await viaPg(
    `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid() AND ${filter}`,
    [],
  );
  return rows[0]?.n as number;
}

async function until(check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('connections', () => {
  it('LISTEN: notified, and listening again (with one onNotify) after its connection is lost', async () => {
    if (t.db.kind === 'pglite') {
      // PGlite has no LISTEN; its callers poll (src/db/types.ts).
      expect(t.db.listen).toBeUndefined();
      return;
    }
    let calls = 0;
    const stop = await (t.db.listen as NonNullable<typeof t.db.listen>)('driver_probe', () => {
      calls++;
    });
    try {
      expect(calls).toBe(1); // listening
      await t.db.query("SELECT pg_notify('driver_probe', 'x')");
      await until(() => calls === 2);
      await t.db.query("SELECT pg_notify('other_channel', 'x')");
      expect(await terminateOtherBackends("query ILIKE 'LISTEN%'")).toBe(1);
      await until(() => calls === 3); // listening again
      await t.db.query("SELECT pg_notify('driver_probe', 'y')");
      await until(() => calls === 4);
    } finally {
      await stop();
    }
    await t.db.query("SELECT pg_notify('driver_probe', 'z')");
    await new Promise((r) => setTimeout(r, 100));
    expect(calls).toBe(4);
  });

  it('survives idle pool connections losing their server', async () => {
    // Several pooled connections, idle afterwards.
    await Promise.all([1, 2, 3].map(() => t.db.query('SELECT pg_sleep(0.05)')));
    if (t.db.kind === 'pg') expect(await terminateOtherBackends()).toBeGreaterThanOrEqual(1);
    await new Promise((r) => setTimeout(r, 100));
    const { rows } = await t.db.query<{ one: number }>('SELECT 1 AS one');
    expect(rows).toEqual([{ one: 1 }]);
    expect(await t.db.transaction((tx) => tx.query('SELECT 2 AS two'))).toMatchObject({ rows: [{ two: 2 }] });
  });

  it('fails only the statement or transaction whose backend is terminated, and recovers', async () => {
    if (t.db.kind === 'pglite') {
      expect(t.url).toBeUndefined(); // one in-process database: no backend to lose
      return;
    }
    const sleeping = "query LIKE 'SELECT pg_sleep(30)%'";
    const running = async () =>
      ((await viaPg(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE ${sleeping}`, []))[0]
        ?.n as number) === 1;
    const statement = () => t.db.query('SELECT pg_sleep(30)');
    const transaction = () =>
      t.db.transaction(async (tx) => {
        await tx.query('SELECT 1');
        tx.afterCommit(() => {
          throw new Error('must not run');
        });
        return tx.query('SELECT pg_sleep(30)');
      });
    for (const start of [statement, transaction]) {
      const settled = start().then(
        () => 'resolved',
        (err: { code?: string }) => err.code,
      );
      const end = Date.now() + 5000;
      while (!(await running()) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      expect(await terminateOtherBackends(sleeping)).toBe(1);
      expect(await settled).toBe('CONNECTION_CLOSED');
    }
    // Every pooled connection (5 in tests), the reopened ones included, serves statements and
    // transactions again; none inherits the terminated backend's error.
    const n = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        i % 4
          ? t.db.query<{ n: number }>('SELECT $1::int AS n, pg_sleep(0.01)', [i]).then((r) => r.rows[0]?.n)
          : t.db
              .transaction((tx) => tx.query<{ n: number }>('SELECT $1::int AS n', [i]))
              .then((r) => r.rows[0]?.n),
      ),
    );
    expect(n).toEqual(Array.from({ length: 20 }, (_, i) => i));
  });
});
