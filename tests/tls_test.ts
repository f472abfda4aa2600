/**
 * TLS end to end: a self-signed certificate made by `openssl` in a temp directory, a server
 * started with `--cert`/`--key` (in process, and as the real command line), and clients that trust
 * only that certificate talking `https://` and `wss://` to it.
 */
import assert from "node:assert/strict";
import { spawnServer, startTestServer, TestSocket } from "./helpers/server.ts";
import { selfSignedCert } from "./helpers/tls.ts";
import { mintToken } from "../auth/token.ts";

const sanitized = { sanitizeOps: true, sanitizeResources: true, sanitizeExit: true };

interface Certificate extends AsyncDisposable {
  /** The temp directory holding `cert.pem` and `key.pem`. */
  dir: string;
  certFile: string;
  keyFile: string;
  /** The certificate, PEM: the only root the test clients trust. */
  pem: string;
}

/** Makes a one-day self-signed P-256 certificate for localhost and 127.0.0.1 in a temp dir. */
async function selfSigned(): Promise<Certificate> {
  const dir = await Deno.makeTempDir({ prefix: "parley-tls-" });
  const { certFile, keyFile, cert } = await selfSignedCert(dir);
  return {
    dir,
    certFile,
    keyFile,
    pem: cert,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

Deno.test({
  name: "server with --cert and --key serves https:// and wss:// with that certificate",
  ...sanitized,
  async fn() {
    await using cert = await selfSigned();
    await using server = await startTestServer(["--cert", cert.certFile, "--key", cert.keyFile]);
    assert.equal(server.url.protocol, "https:");
    const client = Deno.createHttpClient({ caCerts: [cert.pem] });
    try {
      const health = await fetch(new URL("healthz", server.url), { client });
      assert.deepEqual(await health.json(), { status: "ok" });
      const wss = server.ws({ name: "alice" });
      assert.match(wss, /^wss:\/\//);
      await using alice = await TestSocket.open(wss, { client, protocols: "parley.v1" });
      // By name too: the certificate is for localhost as well as 127.0.0.1.
      const byName = new URL(server.ws({ name: "bob" }));
      byName.hostname = "localhost";
      await using bob = await TestSocket.open(byName.href, { client });
      assert.equal(alice.socket.protocol, "parley.v1");
      assert.equal(alice.of("welcome")[0]?.user, "alice");
      alice.send({ type: "message", content: "over TLS", ref: "t" });
      await alice.next("ack");
      assert.equal((await bob.next("message")).content, "over TLS");
    } finally {
      client.close();
    }
  },
});

Deno.test({
  name: "a client that does not trust the certificate cannot connect",
  ...sanitized,
  async fn() {
    await using cert = await selfSigned();
    await using other = await selfSigned();
    await using server = await startTestServer(["--cert", cert.certFile, "--key", cert.keyFile]);
    const client = Deno.createHttpClient({ caCerts: [other.pem] });
    try {
      await assert.rejects(fetch(new URL("healthz", server.url), { client }), TypeError);
      await assert.rejects(TestSocket.open(server.ws(), { client }), /Cannot connect/);
    } finally {
      client.close();
    }
  },
});

Deno.test({
  name: "the parley command serves wss:// in token mode with a bearer token",
  ...sanitized,
  async fn() {
    await using cert = await selfSigned();
    const secret = "parley-tls-test-secret-0123456789abcdef";
    // Run where the files are: `deno task start` may read only below its working directory
    // (and /etc/parley, /var/lib/parley), as a deployment keeps them.
    await using server = await spawnServer([
      "--store",
      "memory:",
      "--cert",
      "cert.pem",
      "--key",
      "key.pem",
    ], { env: { PARLEY_JWT_SECRET: secret }, cwd: cert.dir });
    assert.equal(server.url.protocol, "https:");
    assert.match(server.output(), /WebSocket wss:\/\//);
    const client = Deno.createHttpClient({ caCerts: [cert.pem] });
    try {
      const token = await mintToken({ secret, sub: "carol", ttlSeconds: 600 });
      await using carol = await TestSocket.open(server.ws(), {
        client,
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(carol.of("welcome")[0]?.user, "carol");
      const refused = await fetch(new URL("api/rooms/lobby/messages", server.url), { client });
      assert.equal(refused.status, 401);
      await refused.body?.cancel();
    } finally {
      client.close();
    }
  },
});
