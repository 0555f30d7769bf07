// Writes the table-derived parts of contracts/ProtocolParameters.sol (the Param enum, PARAM_COUNT, the
// genesis values, names() and the range table) from fedledger/chain/param_table.json, between the
// "<generated:...>" markers; the rest of the contract is hand-written.
//   node scripts/genParams.js          rewrite the contract
//   node scripts/genParams.js --check  exit 1 if the contract differs from the table (test/ParamTable.test.js)
const fs = require("fs");
const path = require("path");
const { PARAMS, UINT256_MAX, WAD } = require("./paramTable");

const CONTRACT = path.join(__dirname, "..", "contracts", "ProtocolParameters.sol");
const IND = "    ";

const SCALED = new Set(["token", "real", "score"]);

// A WAD amount as "<decimal>e18" when that is short (0.3e18), else null.
function wadLiteral(raw) {
  const whole = (raw / WAD).toString();
  const frac = (raw % WAD).toString().padStart(18, "0").replace(/0+$/, "");
  const text = frac ? `${whole}.${frac}` : whole;
  return text.length <= 10 ? `${text}e18` : null;
}

/** A raw value as a readable Solidity literal for parameter p (WAD amounts as 0.3e18, 0.5e18 - 1). */
function literal(raw, p) {
  if (raw === UINT256_MAX) return "type(uint256).max";
  for (const bits of [96n, 32n]) if (raw === (1n << bits) - 1n) return `type(uint${bits}).max`;
  if (SCALED.has(p.kind) && raw > 0n) {
    const exact = wadLiteral(raw);
    if (exact) return exact;
    const below = wadLiteral(raw + 1n);
    if (below) return `${below} - 1`;
  }
  const digits = raw.toString();
  return digits.length > 6 ? digits.replace(/\B(?=(\d{3})+(?!\d))/g, "_") : digits;
}

function mask(pred) {
  const bits = PARAMS.filter(pred).map((p) => `(1 << uint256(Param.${p.enumName}))`);
  return bits.length ? bits.join(" | ") : "0";
}

function describe(p) {
  const unit = { token: "token wei", real: "WAD", score: "WAD score 0..100", count: "count", seconds: "seconds",
    bool: "0 or 1", enum: p.values ? p.values.map((v, i) => `${i} ${v}`).join(" ") : "", reserved: "reserved" }[p.kind];
  return `${unit}; ${p.meaning}`;
}

function declarations() {
  const last = PARAMS.length - 1;
  const lines = [
    `${IND}/// @notice Index of each parameter in {getAll}. Append only: the order is part of the interface.`,
    `${IND}/// @dev Generated from fedledger/chain/param_table.json (units, defaults, ranges, meanings).`,
    `${IND}enum Param {`,
    ...PARAMS.map((p, i) => `${IND}${IND}${p.enumName}${i < last ? "," : ""} // ${i} ${describe(p)}`),
    `${IND}}`,
    "",
    `${IND}/// @notice Number of parameters (uint256(type(Param).max) + 1; a literal because array lengths need one).`,
    `${IND}uint256 public constant PARAM_COUNT = ${PARAMS.length};`,
    `${IND}/// @dev Bit i set: parameter i is a retired slot that nothing reads; setParameter refuses it.`,
    `${IND}uint256 private constant RESERVED = ${mask((p) => p.kind === "reserved")};`,
    `${IND}/// @dev Bit i set: parameter i changes only through {setFitnessWeights}.`,
    `${IND}uint256 private constant FITNESS_WEIGHTS = ${mask((p) => p.setter === "setFitnessWeights")};`,
  ];
  return lines.join("\n");
}

function functions() {
  const genesis = PARAMS.filter((p) => p.genesis !== 0n).map((p) =>
    `${IND}${IND}_values[uint256(Param.${p.enumName})] = ${literal(p.genesis, p)}; // ${p.default}`);
  const names = [];
  let line = "";
  for (const p of PARAMS) {
    const item = `"${p.name}",`;
    if ((IND.repeat(3) + line + " " + item).length > 118) { names.push(IND.repeat(3) + line.trim()); line = ""; }
    line += " " + item;
  }
  names.push(IND.repeat(3) + line.trim().replace(/,$/, ""));
  const arr = (f) => `[${PARAMS.map((p, i) => (i === 0 ? `uint256(${literal(f(p), p)})` : literal(f(p), p))).join(", ")}]`;
  return [
    `${IND}/// @dev The genesis values (zero where not set).`,
    `${IND}function _initGenesis() private {`,
    ...genesis,
    `${IND}}`,
    "",
    `${IND}/// @notice The names of the parameters in {Param} order, so off-chain readers can check their mapping.`,
    `${IND}// Generated, one name per line: it grows with the table past a hand-written function's length.`,
    `${IND}// solhint-disable-next-line function-max-lines`,
    `${IND}function names() external pure returns (string[PARAM_COUNT] memory n) {`,
    `${IND}${IND}n = [`,
    ...names,
    `${IND}${IND}];`,
    `${IND}}`,
    "",
    `${IND}/// @dev Inclusive bounds of every parameter's on-chain value, indexed by {Param}.`,
    `${IND}// A generated table, one line per parameter: longer than a hand-written function may be.`,
    `${IND}// solhint-disable-next-line function-max-lines`,
    `${IND}function _bounds() private pure returns (uint256[PARAM_COUNT] memory lo, uint256[PARAM_COUNT] memory hi) {`,
    `${IND}${IND}lo = ${arr((p) => p.min)};`,
    `${IND}${IND}hi = ${arr((p) => p.max)};`,
    `${IND}}`,
  ].join("\n");
}

function wrap(long) {
  // Break the bound arrays after commas so no line exceeds 120 characters.
  return long.split("\n").flatMap((l) => {
    if (l.length <= 120) return [l];
    const head = l.match(/^\s*/)[0] + IND;
    const out = [];
    let cur = "";
    for (const part of l.split(/(?<=,) /)) {
      if ((cur + part).length > 116 && cur) { out.push(cur.trimEnd()); cur = head; }
      cur += part + " ";
    }
    out.push(cur.trimEnd());
    return out;
  }).join("\n");
}

function render(source) {
  const regions = { "param-declarations": declarations(), "param-functions": wrap(functions()) };
  let out = source;
  for (const [tag, body] of Object.entries(regions)) {
    const re = new RegExp(`(${IND}// <generated:${tag}>[^\\n]*\\n)[\\s\\S]*?(${IND}// </generated:${tag}>)`);
    if (!re.test(out)) throw new Error(`ProtocolParameters.sol lacks the <generated:${tag}> markers`);
    out = out.replace(re, (_, open, close) => `${open}${body}\n${close}`);
  }
  return out;
}

// The contracts are formatted by prettier-plugin-solidity (make lint): the generated file is too.
async function format(source) {
  const prettier = require("prettier");
  const options = await prettier.resolveConfig(CONTRACT);
  return prettier.format(source, { ...options, filepath: CONTRACT });
}

async function main() {
  const source = fs.readFileSync(CONTRACT, "utf8");
  const generated = await format(render(source));
  if (process.argv.includes("--check")) {
    if (generated !== source) {
      console.error("ProtocolParameters.sol differs from fedledger/chain/param_table.json: run node scripts/genParams.js");
      process.exit(1);
    }
    return;
  }
  fs.writeFileSync(CONTRACT, generated);
}

if (require.main === module) main().catch((e) => { console.error(e.message); process.exit(1); });
module.exports = { render, CONTRACT, WAD };
