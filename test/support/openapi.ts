/**
 * Validates real HTTP responses against the hub's OpenAPI document: the operation is found by
 * method and path template, the response by status (or `default`), and the body is checked with
 * Ajv (JSON Schema 2020-12, as OpenAPI 3.1 uses) against the schema the document gives for it.
 */
import { Ajv2020, type ErrorObject } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';

const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default;
const DOC_ID = 'https://kakehashi.invalid/openapi.json';

type Json = Record<string, unknown>;

export interface OpenApiValidator {
  /** Throws with Ajv's errors when `body` does not match what the document says for this response. */
  check(method: string, url: string | URL, status: number, body: unknown): void;
  /** Throws unless `value` matches components.schemas[name]. */
  checkSchema(name: string, value: unknown): void;
  /** Every path template with the method, for coverage checks. */
  operations(): string[];
  /** `METHOD template status` of every response checked so far. */
  checked: Set<string>;
}

const pointer = (parts: string[]) => parts.map((p) => p.replace(/~/g, '~0').replace(/\//g, '~1')).join('/');

export function openApiValidator(doc: Json): OpenApiValidator {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addSchema({ ...doc, $id: DOC_ID });
  const paths = doc.paths as Record<string, Record<string, Json>>;
  const templates = Object.keys(paths).map((t) => ({
    template: t,
    regex: new RegExp(`^${t.replace(/\{[^}]+\}/g, '[^/]+')}$`),
  }));

  /** Follows a local $ref, returning the target and its location. */
  const resolve = (node: Json, at: string[]): [Json, string[]] => {
    const ref = node.$ref;
    if (typeof ref !== 'string') return [node, at];
    const parts = ref
      .replace(/^#\//, '')
      .split('/')
      .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    let target: unknown = doc;
    for (const p of parts) target = (target as Json)[p];
    return resolve(target as Json, parts);
  };

  const run = (id: string, value: unknown, what: string) => {
    const validate = ajv.getSchema(id);
    if (!validate) throw new Error(`OpenAPI: schema ${id} not found`);
    if (!validate(value))
      throw new Error(
        `OpenAPI: ${what} does not match: ${(validate.errors as ErrorObject[])
          .map((e) => `${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`)
          .join('; ')}`,
      );
  };
  const checked = new Set<string>();

  return {
    checked,
    checkSchema(name, value) {
      run(`${DOC_ID}#/components/schemas/${pointer([name])}`, value, name);
    },
    operations() {
      return Object.entries(paths).flatMap(([p, ops]) =>
        Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`),
      );
    },
    check(method, url, status, body) {
      const path = new URL(url).pathname;
      const found = templates.find((t) => t.regex.test(path));
      if (!found) throw new Error(`OpenAPI: no path matches ${path}`);
      const op = paths[found.template]![method.toLowerCase()];
      if (!op) throw new Error(`OpenAPI: no ${method} ${found.template}`);
      const responses = op.responses as Record<string, Json>;
      const key = String(status) in responses ? String(status) : 'default';
      const declared = responses[key];
      if (!declared) throw new Error(`OpenAPI: ${method} ${found.template} declares no ${status} response`);
      const [response, at] = resolve(declared, [
        'paths',
        found.template,
        method.toLowerCase(),
        'responses',
        key,
      ]);
      checked.add(`${method.toUpperCase()} ${found.template} ${status}`);
      const content = response.content as Record<string, Json> | undefined;
      if (!content) {
        if (body !== undefined && body !== '')
          throw new Error(`OpenAPI: ${status} of ${method} ${found.template} has no body, got one`);
        return;
      }
      if (!content['application/json']) throw new Error('OpenAPI: response is not application/json');
      run(
        `${DOC_ID}#/${pointer([...at, 'content', 'application/json', 'schema'])}`,
        body,
        `${method} ${path} ${status}`,
      );
    },
  };
}
