// Validates .glb/.gltf files with the Khronos glTF validator (npm `gltf-validator`, the
// reference implementation) and prints each report's counts and issues as one JSON line.
// Exit 1 when any file has an error. Usage: NODE_PATH=<dir with node_modules> node
// validate_gltf.cjs FILE...
const fs = require('node:fs');
const validator = require('gltf-validator');

(async () => {
  let failed = false;
  for (const path of process.argv.slice(2)) {
    const report = await validator.validateBytes(new Uint8Array(fs.readFileSync(path)), {
      maxIssues: 200,
      uri: path,
    });
    const i = report.issues;
    const messages = i.messages.map((m) => `${m.severity} ${m.code} ${m.pointer || ''}: ${m.message}`);
    console.log(JSON.stringify({ file: path, errors: i.numErrors, warnings: i.numWarnings,
      infos: i.numInfos, hints: i.numHints, messages }));
    if (i.numErrors > 0) failed = true;
  }
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.error(`validate_gltf: ${e}`); process.exit(2); });
