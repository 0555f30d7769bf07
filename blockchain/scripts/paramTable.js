// The governed-parameter table (fedledger/chain/param_table.json) in on-chain units, for the deploy script,
// the tests and the generator of ProtocolParameters.sol (scripts/genParams.js). The Python side reads the
// same file (fedledger/chain/param_table.py).
const path = require("path");

const TABLE_PATH = path.join(__dirname, "..", "..", "fedledger", "chain", "param_table.json");
const WAD = 10n ** 18n;
const UINT256_MAX = (1n << 256n) - 1n;
const SCALED = new Set(["token", "real", "score"]);
const KINDS = new Set(["token", "real", "score", "count", "seconds", "bool", "enum", "reserved"]);

/** "1.25" in a kind's human unit -> the uint256 the chain stores (exact; refuses what does not fit). */
function toRaw(kind, text, name) {
  const m = /^(\d+)(?:\.(\d+))?$/.exec(String(text).trim());
  if (!m) throw new Error(`${name}: ${JSON.stringify(text)} is not a non-negative decimal`);
  const [, whole, frac = ""] = m;
  if (!SCALED.has(kind)) {
    if (frac.replace(/0/g, "") !== "") throw new Error(`${name}: a ${kind} is a whole number, got ${text}`);
    return BigInt(whole);
  }
  if (frac.length > 18) throw new Error(`${name}: ${text} has more than 18 decimals`);
  return BigInt(whole) * WAD + BigInt(frac.padEnd(18, "0"));
}

/** "[0, 0.5)" -> inclusive raw bounds {min, max}. */
function rawRange(p) {
  if (p.kind === "enum") return { min: 0n, max: BigInt(p.values.length - 1) };
  const m = /^([[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])$/.exec(p.range || "");
  if (!m) throw new Error(`${p.name}: range ${JSON.stringify(p.range)} is not an interval like "[0, 0.5)"`);
  const [, open, lo, hi, close] = m;
  let min = toRaw(p.kind, lo, p.name) + (open === "(" ? 1n : 0n);
  let max = hi === "inf" ? UINT256_MAX : toRaw(p.kind, hi, p.name) - (close === ")" ? 1n : 0n);
  if (p.bits !== undefined) max = max < (1n << BigInt(p.bits)) - 1n ? max : (1n << BigInt(p.bits)) - 1n;
  if (min > max) throw new Error(`${p.name}: empty range ${p.range}`);
  return { min, max };
}

/** snake_case -> the Solidity enum member (base_reward -> BaseReward). */
function enumName(name) {
  return name.split("_").map((w) => w[0].toUpperCase() + w.slice(1)).join("");
}

/** The table, checked, with each entry's enum name, raw genesis value and raw inclusive range. */
function loadParamTable(file = TABLE_PATH) {
  const table = JSON.parse(require("fs").readFileSync(file, "utf8"));
  return table.parameters.map((p, i) => {
    if (p.index !== i) throw new Error(`${p.name}: index ${p.index} at position ${i} (the table is append-only, in order)`);
    if (!KINDS.has(p.kind)) throw new Error(`${p.name}: unknown kind ${p.kind}`);
    if (!/^[a-z][a-z0-9_]*$/.test(p.name)) throw new Error(`${p.name}: names are snake_case`);
    if (p.kind === "reserved") return { ...p, enumName: enumName(p.name), genesis: 0n, min: 0n, max: 0n };
    const genesis = p.kind === "enum" ? BigInt(p.values.indexOf(p.default)) : toRaw(p.kind, p.default, p.name);
    if (genesis < 0n) throw new Error(`${p.name}: default ${p.default} is not one of ${p.values}`);
    const { min, max } = rawRange(p);
    if (genesis < min || genesis > max) throw new Error(`${p.name}: default ${p.default} outside ${p.range}`);
    return { ...p, enumName: enumName(p.name), genesis, min, max };
  });
}

const PARAMS = loadParamTable();
/** Enum member -> index, e.g. P.DisputeWindow === 46. */
const P = Object.fromEntries(PARAMS.map((p) => [p.enumName, p.index]));
/** snake_case name -> raw genesis value. */
const GENESIS = Object.fromEntries(PARAMS.map((p) => [p.name, p.genesis]));

module.exports = { TABLE_PATH, WAD, UINT256_MAX, PARAMS, P, GENESIS, loadParamTable, toRaw, enumName };
