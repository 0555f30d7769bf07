// Fails `make test` when the contracts' coverage (written by `npx hardhat coverage`) drops below the goal of
// issue 13: 100 % of lines and at least 95 % of branches.
const path = require("path");

const summary = require(path.join(__dirname, "..", "coverage", "coverage-summary.json")).total;
const goals = { lines: 100, branches: 95 };
let failed = false;
for (const [metric, goal] of Object.entries(goals)) {
  const pct = summary[metric].pct;
  const ok = pct >= goal;
  failed ||= !ok;
  console.log(`coverage ${metric}: ${pct} % (goal >= ${goal} %) ${ok ? "ok" : "BELOW GOAL"}`);
}
process.exit(failed ? 1 : 0);
