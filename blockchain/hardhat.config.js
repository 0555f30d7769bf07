// Hardhat 2 with the Solidity compiler from the npm `solc` package (WebAssembly build): nothing is
// downloaded at compile time. See README.md for why Hardhat 2 and not 3.
const path = require("path");
const { subtask } = require("hardhat/config");
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require("hardhat/builtin-tasks/task-names");
require("@nomicfoundation/hardhat-ethers");
require("@nomicfoundation/hardhat-chai-matchers");
require("solidity-coverage");

const SOLC_VERSION = require("solc/package.json").version;

// HARDHAT_BUILD_DIR moves the artifacts and the compile cache (`make test` runs solidity-coverage with it):
// the instrumented build then never replaces artifacts/, which the Python tests deploy meanwhile.
const BUILD_DIR = process.env.HARDHAT_BUILD_DIR;

subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async ({ solcVersion }) => {
  if (solcVersion !== SOLC_VERSION) {
    throw new Error(`only solc ${SOLC_VERSION} (npm package "solc") is available offline; config asks ${solcVersion}`);
  }
  return {
    compilerPath: path.join(__dirname, "node_modules", "solc", "soljson.js"),
    isSolcJs: true,
    version: SOLC_VERSION,
    longVersion: require("solc").version(),
  };
});

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  solidity: {
    version: SOLC_VERSION,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "cancun",
    },
  },
  networks: {
    hardhat: {
      chainId: 31337,
      // recordRound with 1000 contributions in one transaction fits well under this.
      blockGasLimit: 30_000_000,
    },
    localhost: {
      url: process.env.FEDLEDGER_CHAIN_RPC_URL || "http://127.0.0.1:8545",
      chainId: 31337,
    },
  },
  mocha: { timeout: 120000 },
  paths: BUILD_DIR
    ? { artifacts: path.resolve(__dirname, BUILD_DIR, "artifacts"), cache: path.resolve(__dirname, BUILD_DIR, "cache") }
    : {},
};
