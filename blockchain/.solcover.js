// solidity-coverage (`npx hardhat coverage`, run by `make test`). The gas test skips itself under instrumentation.
module.exports = {
  skipFiles: [],
  istanbulReporter: ["text", "text-summary", "json-summary"],
};
