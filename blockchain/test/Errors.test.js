// Issue 13 / 11.6: every custom error of the contracts is reverted by a test, and every error and event of the
// contracts carries NatSpec. Both read the sources and the other test files, so a new error or event without a
// test or a comment fails here.
const { expect } = require("chai");
const fs = require("fs");
const path = require("path");

const CONTRACTS = path.join(__dirname, "..", "contracts");
const sources = Object.fromEntries(fs.readdirSync(CONTRACTS).filter((f) => f.endsWith(".sol"))
  .map((f) => [f, fs.readFileSync(path.join(CONTRACTS, f), "utf8")]));
const tests = fs.readdirSync(__dirname).filter((f) => f.endsWith(".test.js") && f !== path.basename(__filename))
  .map((f) => fs.readFileSync(path.join(__dirname, f), "utf8")).join("\n");

function declarations(kind) {
  const out = [];
  for (const [file, text] of Object.entries(sources)) {
    const lines = text.split("\n");
    lines.forEach((line, i) => {
      const m = line.match(new RegExp(`^\\s*${kind}\\s+(\\w+)\\s*\\(`));
      if (m) out.push({ file, name: m[1], line: i, lines });
    });
  }
  return out;
}

describe("Errors and events", function () {
  it("has a test that expects every custom error", function () {
    const errors = declarations("error");
    expect(errors.length).to.be.greaterThan(30);
    const untested = errors.filter(({ name }) => !new RegExp(`revertedWithCustomError\\([^)]*"${name}"`).test(tests));
    expect(untested.map((e) => `${e.file}:${e.name}`)).to.deep.equal([]);
  });

  it("documents every error and event with NatSpec", function () {
    const undocumented = [];
    for (const d of [...declarations("error"), ...declarations("event")]) {
      const block = [];
      for (let i = d.line - 1; i >= 0 && /^\s*\/\/\//.test(d.lines[i]); i--) block.push(d.lines[i]);
      if (!block.some((l) => /@notice/.test(l))) undocumented.push(`${d.file}:${d.name}`);
    }
    expect(undocumented).to.deep.equal([]);
  });
});
