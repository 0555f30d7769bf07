// ProtocolParameters.sol against the one parameter table (fedledger/chain/param_table.json): the generated
// parts are up to date, and the deployed contract has every name, genesis value and range of the table.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { execFileSync } = require("child_process");
const path = require("path");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { PARAMS, UINT256_MAX, toRaw } = require("../scripts/paramTable");

async function standalone() {
  const [governor] = await ethers.getSigners();
  const params = await (await ethers.getContractFactory("ProtocolParameters")).deploy(governor.address);
  return { params, governor };
}

describe("ProtocolParameters and the parameter table", function () {
  it("is the generator's output for the table (run node scripts/genParams.js after editing the table)", function () {
    execFileSync(process.execPath, [path.join(__dirname, "..", "scripts", "genParams.js"), "--check"], { stdio: "pipe" });
  });

  it("has the table's names, order, count and genesis values", async function () {
    const { params } = await loadFixture(standalone);
    expect(await params.PARAM_COUNT()).to.equal(BigInt(PARAMS.length));
    expect([...(await params.names())]).to.deep.equal(PARAMS.map((p) => p.name));
    expect([...(await params.getAll())]).to.deep.equal(PARAMS.map((p) => p.genesis));
  });

  it("reads human values exactly and refuses what the chain cannot store", function () {
    expect(toRaw("real", "0.00001", "x")).to.equal(10n ** 13n);
    expect(toRaw("token", "12.5", "x")).to.equal(125n * 10n ** 17n);
    expect(toRaw("count", "3", "x")).to.equal(3n);
    expect(() => toRaw("count", "1.5", "x")).to.throw(/whole number/);
    expect(() => toRaw("real", "-1", "x")).to.throw(/non-negative decimal/);
    expect(() => toRaw("real", "0.0000000000000000001", "x")).to.throw(/18 decimals/);
  });

  // Each settable parameter accepts both ends of its range and refuses one step beyond either.
  for (const p of PARAMS.filter((q) => q.kind !== "reserved" && !q.setter)) {
    it(`${p.name}: accepts ${p.kind === "enum" ? `0..${p.values.length - 1}` : p.range} and nothing outside`, async function () {
      const { params, governor } = await loadFixture(standalone);
      for (const value of [p.min, p.max]) {
        await expect(params.connect(governor).setParameter(p.index, value)).to.emit(params, "ParameterChanged");
      }
      const outside = [...(p.min > 0n ? [p.min - 1n] : []), ...(p.max < UINT256_MAX ? [p.max + 1n] : [])];
      for (const value of outside) {
        await expect(params.connect(governor).setParameter(p.index, value))
          .to.be.revertedWithCustomError(params, "InvalidParameter").withArgs(p.index, value, p.min, p.max);
      }
    });
  }
});
