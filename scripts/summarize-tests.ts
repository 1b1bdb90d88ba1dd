// Adds up vitest JSON reports into one closing line: "tests: N passed, N failed". Failures are
// repeated just above that line (file, test, first lines of the message) so that the tail of a CI
// log alone says what broke.
import { existsSync, readFileSync } from 'node:fs';
import { relative } from 'node:path';

interface Assertion {
  fullName: string;
  status: string;
  failureMessages: string[];
}
interface Report {
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  numTodoTests: number;
  testResults: { name: string; status: string; message: string; assertionResults: Assertion[] }[];
}

const firstLines = (text: string, n = 6) =>
  text
    .split('\n')
    .slice(0, n)
    .map((l) => `      ${l}`)
    .join('\n');

let passed = 0;
let failed = 0;
const failures: string[] = [];
for (const file of process.argv.slice(2)) {
  if (!existsSync(file)) {
    console.error(`${file}: no report (the run did not finish)`);
    failed += 1;
    continue;
  }
  const r = JSON.parse(readFileSync(file, 'utf8')) as Report;
  passed += r.numPassedTests;
  failed += r.numFailedTests + r.numPendingTests + r.numTodoTests;
  for (const suite of r.testResults ?? []) {
    const where = `${relative(process.cwd(), suite.name)} (${file})`;
    if (suite.status === 'failed' && suite.message) {
      failures.push(`  ${where}\n${firstLines(suite.message)}`);
    }
    for (const a of suite.assertionResults ?? []) {
      if (a.status === 'passed') continue;
      failures.push(`  ${where} > ${a.fullName} [${a.status}]\n${firstLines(a.failureMessages.join('\n'))}`);
    }
  }
}
if (failures.length > 0) console.log(`failures:\n${failures.join('\n')}`);
console.log(`tests: ${passed} passed, ${failed} failed`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
