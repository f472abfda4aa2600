/**
 * Tests what the server's first start downloads: `main.ts` run under the start task's permission
 * set with an empty Deno cache fetches the npm packages its own module graph reaches and none of
 * the test-only ones (puppeteer-core and its tree), and leaves deno.lock as it is.
 *
 * Deno installs every package of the lockfile's npm snapshot on first use unless deno.json turns
 * on `"unstable": ["npm-lazy-caching"]`; puppeteer-core sits in that snapshot because the tests
 * import it through the same import map. The test fetches from the npm registry (about 8 MB), as
 * a user's first `deno task start` does.
 */
import assert from "node:assert/strict";
import { join } from "node:path";

const ROOT = new URL("../", import.meta.url).pathname;
/** Most the fresh cache may hold after the first start, in bytes (31 MB when last measured). */
const FIRST_START_MAX_BYTES = 40 * 1024 * 1024;
/** Packages only the tests use; the server must not download them. */
const TEST_ONLY = ["puppeteer-core", "chromium-bidi", "devtools-protocol"];

/** The total size of the files under `dir`, in bytes. */
async function bytesUnder(dir: string): Promise<number> {
  let total = 0;
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) total += await bytesUnder(path);
    else total += (await Deno.lstat(path)).size;
  }
  return total;
}

Deno.test({
  name: "the first start fetches only the server's npm packages, not the tests' puppeteer-core",
  sanitizeOps: true,
  sanitizeResources: true,
  fn: async () => {
    const cache = await Deno.makeTempDir({ prefix: "parley-first-start-" });
    try {
      const lock = await Deno.readTextFile(join(ROOT, "deno.lock"));
      const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--frozen", "-P=server", "main.ts", "--version"],
        cwd: ROOT,
        env: { DENO_DIR: cache, NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const log = new TextDecoder().decode(stderr);
      assert.equal(code, 0, log);
      assert.match(new TextDecoder().decode(stdout), /^parley \d+\.\d+\.\d+ /);
      const fetched = [...Deno.readDirSync(join(cache, "npm", "registry.npmjs.org"))]
        .map((entry) => entry.name);
      // The server's own packages did come down, so the check below means something.
      for (const name of ["zod", "jose", "@logtape", "prom-client"]) {
        assert.ok(fetched.includes(name), `${name} was fetched: ${fetched.join(", ")}`);
      }
      assert.deepEqual(fetched.filter((name) => TEST_ONLY.includes(name)), []);
      const bytes = await bytesUnder(cache);
      assert.ok(bytes <= FIRST_START_MAX_BYTES, `the first start cached ${bytes} bytes`);
      assert.equal(await Deno.readTextFile(join(ROOT, "deno.lock")), lock);
    } finally {
      await Deno.remove(cache, { recursive: true });
    }
  },
});
