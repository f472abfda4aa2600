/**
 * End-to-end tests of the browser client (`static/index.html`, `app.js`, `style.css`) in real
 * headless Chromium, driven by puppeteer-core, against real Parley servers on free ports: one
 * browser per test, one browser context per user (separate storage, like separate people).
 *
 * The pages are read through their `data-testid` hooks; what a page received is read from
 * DevTools' WebSocket frame events, so "carol never saw the DM" is checked on the wire as well as
 * on the screen. Each test saves a screenshot to a temp directory and prints its path.
 *
 * Sanitizers stay on: each test closes its pages, browser (and its CDP pipe), servers and temp
 * directories before it ends.
 */
import assert from "node:assert/strict";
import { type ChatPage, type PageDocument, screenshot, TestBrowser } from "./helpers/browser.ts";
import {
  type ServerProcess,
  spawnServer,
  START_PERMISSIONS,
  startTestServer,
} from "./helpers/server.ts";

declare const document: PageDocument;
declare function alert(message: string): void;

/** The API key of test servers that publish over HTTP. */
const API_KEY = "browser-test-key";

function test(name: string, fn: (browser: TestBrowser) => Promise<void>) {
  Deno.test({
    name,
    sanitizeOps: true,
    sanitizeResources: true,
    fn: async () => {
      await using browser = await TestBrowser.launch();
      await fn(browser);
    },
  });
}

/** Publishes a room message through `POST /api/rooms/{room}/messages`; returns the stored one. */
async function post(
  url: URL,
  room: string,
  sender: string,
  content: string,
): Promise<{ id: number }> {
  const response = await fetch(new URL(`api/rooms/${room}/messages`, url), {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ sender, content }),
  });
  const body = await response.json();
  assert.equal(response.status, 201, JSON.stringify(body));
  return body;
}

/** Fails when a page opened a dialog or threw an uncaught exception. */
function assertClean(...pages: ChatPage[]): void {
  for (const page of pages) {
    assert.deepEqual(page.dialogs, [], `${page.name} opened dialogs`);
    assert.deepEqual(page.errors, [], `${page.name} threw`);
  }
}

/** Waits until a page's people list shows exactly these users (sorted). */
async function waitForPeople(page: ChatPage, users: string[]): Promise<void> {
  await page.waitFor(`people ${users.join(", ")}`, (expected) => {
    const shown = [...document.querySelectorAll("[data-testid=user-item]")]
      .map((item) => item.dataset.user ?? "").sort();
    return JSON.stringify(shown) === expected;
  }, JSON.stringify([...users].sort()));
}

test("browser: a message sent with Enter shows in both pages, pending then confirmed", async (browser) => {
  await using server = await startTestServer();
  const [alice, bob] = await browser.openAll(server.url, "alice", "bob");
  await waitForPeople(alice, ["alice", "bob"]);
  await alice.traceMessage("hello bob");

  await alice.send("hello bob");
  await alice.waitForMessage("hello bob");
  await bob.waitForMessage("hello bob");

  // The sender saw its own message pending first, then confirmed under the server's id.
  const trace = await alice.messageTrace();
  assert.equal(trace.length, 2, JSON.stringify(trace));
  assert.equal(trace[0], "pending");
  assert.match(trace[1]!, /^confirmed:\d+$/);
  const id = trace[1]!.slice("confirmed:".length);
  for (const page of [alice, bob]) {
    const rows = (await page.messages()).filter((m) => m.content === "hello bob");
    assert.deepEqual(rows, [{ id, pending: false, sender: "alice", content: "hello bob" }]);
  }
  // The composer was cleared on send.
  assert.equal(
    await alice.page.$eval(
      "[data-testid=composer]",
      (c) => (c as unknown as { value: string }).value,
    ),
    "",
  );

  await bob.send("hi alice");
  await alice.waitForMessage("hi alice");
  await bob.waitForMessage("hi alice");
  const order = (await alice.messages()).map((m) => `${m.sender}: ${m.content}`);
  assert.deepEqual(order, ["alice: hello bob", "bob: hi alice"]);
  assert.deepEqual(
    (await bob.messages()).map((m) => `${m.sender}: ${m.content}`),
    order,
  );
  await screenshot(alice, "two-pages-chat");
  assertClean(alice, bob);
});

test("browser: Shift+Enter starts a new line and Enter sends the multi-line message", async (browser) => {
  await using server = await startTestServer();
  const [alice, bob] = await browser.openAll(server.url, "alice", "bob");
  await alice.send("one line");
  await bob.waitForMessage("one line");

  await alice.type("first line");
  await alice.page.keyboard.down("Shift");
  await alice.page.keyboard.press("Enter");
  await alice.page.keyboard.up("Shift");
  await alice.type("second line");
  const composer = await alice.page.$eval(
    "[data-testid=composer]",
    (c) => (c as unknown as { value: string }).value,
  );
  assert.equal(composer, "first line\nsecond line");
  assert.deepEqual((await alice.messages()).map((m) => m.content), ["one line"]);

  await alice.page.keyboard.press("Enter");
  await bob.waitForMessage("first line\nsecond line");
  await alice.waitForMessage("first line\nsecond line");
  assert.equal(
    await alice.page.$eval(
      "[data-testid=composer]",
      (c) => (c as unknown as { value: string }).value,
    ),
    "",
  );
  // The line break is rendered: the multi-line message is taller than the one-line one.
  const heights = await bob.page.evaluate(() =>
    [...document.querySelectorAll("[data-testid=message] .content")].map((c) =>
      c.getBoundingClientRect().height
    )
  );
  assert.equal(heights.length, 2);
  assert.ok(heights[1]! > heights[0]! * 1.5, `heights ${heights}`);
  await screenshot(bob, "multi-line");
  assertClean(alice, bob);
});

test("browser: a direct message reaches only its two people, never a third page", async (browser) => {
  await using server = await startTestServer();
  const [alice, bob, carol] = await browser.openAll(server.url, "alice", "bob", "carol");
  await waitForPeople(alice, ["alice", "bob", "carol"]);
  const secret = `psst-${crypto.randomUUID()}`;

  await alice.click("[data-testid=user-item][data-user=bob]");
  await alice.waitFor(
    "the DM with bob",
    () => document.querySelector("[data-testid=conversation-title]")?.textContent === "@bob",
  );
  await alice.send(secret);
  await alice.waitForMessage(secret);

  // Bob, reading the lobby, gets an unread badge on the conversation with alice, then the DM.
  await bob.waitFor("an unread DM from alice", () => {
    const item = document.querySelector("[data-testid=dm-item][data-user=alice]");
    const badge = item?.querySelector("[data-testid=unread]");
    return badge?.hidden === false && badge.textContent === "1";
  });
  await screenshot(bob, "dm-unread");
  await bob.click("[data-testid=dm-item][data-user=alice]");
  await bob.waitForMessage(secret);
  assert.ok(bob.frames.some((frame) => frame.includes(secret)), "bob's frames hold the DM");

  // A lobby message after the DM reaches carol: by then the DM would have too.
  await alice.click("[data-testid=room-item][data-room=lobby]");
  await alice.send("back in the lobby");
  await carol.waitForMessage("back in the lobby");
  assert.ok(carol.frames.some((frame) => frame.includes("back in the lobby")));
  assert.ok(!carol.frames.some((frame) => frame.includes(secret)), "carol received the DM");
  const carolText = await carol.page.evaluate(() => document.body.textContent ?? "");
  assert.ok(!carolText.includes(secret), "carol's page shows the DM");
  assert.equal(await carol.page.$$eval("[data-testid=dm-item]", (items) => items.length), 0);
  assertClean(alice, bob, carol);
});

test("browser: scrolling to the top loads older pages down to the first message, keeping the view", async (browser) => {
  await using server = await startTestServer(["--api-key", API_KEY]);
  const total = 120;
  const label = (i: number) => `m${String(i).padStart(3, "0")}`;
  for (let i = 1; i <= total; i++) {
    await post(server.url, "lobby", i % 2 ? "dave" : "erin", label(i));
  }
  const alice = await browser.open(server.url, "alice");
  const atLeast = (n: number) => document.querySelectorAll("[data-testid=message]").length >= n;

  // Opening the room shows the newest page (50, the protocol's default), scrolled to the bottom.
  await alice.waitFor("the newest page", atLeast, 50);
  const expected = (from: number) =>
    Array.from({ length: total - from + 1 }, (_, i) => label(from + i));
  assert.deepEqual((await alice.messages()).map((m) => m.content), expected(71));
  const bottom = await alice.page.evaluate(() => {
    const list = document.querySelector("[data-testid=message-list]")!;
    return list.scrollHeight - list.scrollTop - list.clientHeight;
  });
  assert.ok(bottom < 2, `scrolled ${bottom}px above the bottom`);

  /** Scrolls to the top; returns the first message's id and on-screen position right then. */
  const scrollToTop = () =>
    alice.page.evaluate(() => {
      const list = document.querySelector("[data-testid=message-list]")!;
      list.scrollTop = 0;
      const first = list.querySelector("[data-testid=message]")!;
      return { id: first.dataset.id ?? "", top: first.getBoundingClientRect().top };
    });
  const topOf = (id: string) =>
    alice.page.evaluate((id) => {
      const row = document.querySelector(`[data-testid=message][data-id="${id}"]`);
      return row?.getBoundingClientRect().top ?? Number.NaN;
    }, id);

  for (const [loaded, from] of [[100, 21], [120, 1]] as const) {
    const before = await scrollToTop();
    await alice.waitFor(`${loaded} messages`, atLeast, loaded);
    assert.deepEqual((await alice.messages()).map((m) => m.content), expected(from));
    // The message that was at the top is still where it was: older pages went in above it.
    const after = await topOf(before.id);
    assert.ok(Math.abs(after - before.top) <= 1, `moved from ${before.top} to ${after}`);
  }
  await alice.waitFor(
    "the beginning",
    () => document.querySelector(".start")?.textContent === "This is the beginning of #lobby.",
  );
  assert.equal(
    await alice.page.$eval(
      "[data-testid=load-older]",
      (button) => (button as unknown as { hidden: boolean }).hidden,
    ),
    true,
  );
  const ids = (await alice.messages()).map((m) => Number(m.id));
  assert.equal(new Set(ids).size, total);
  assert.ok(ids.every((id, i) => i === 0 || id > ids[i - 1]!), "ids ascend");
  await screenshot(alice, "scroll-back");
  assertClean(alice);
});

test("browser: pages reconnect after a server restart and show every message exactly once", async (browser) => {
  const dir = await Deno.makeTempDir({ prefix: "parley-browser-" });
  const args = ["--store", `sqlite:${dir}/parley.db`, "--api-key", API_KEY];
  // `deno task start`'s permissions, with the database directory added where they are scoped.
  const permissions = START_PERMISSIONS.map((flag) =>
    /^--allow-(read|write)=/.test(flag) ? `${flag},${dir}` : flag
  );
  const servers: ServerProcess[] = [];
  try {
    servers.push(await spawnServer(args, { permissions }));
    const url = servers[0]!.url;
    const [alice, bob] = await browser.openAll(url, "alice", "bob");
    await alice.send("before the restart");
    await bob.waitForMessage("before the restart");
    await alice.traceStatus();
    await bob.traceStatus();

    const status = await servers[0]!.stop("SIGTERM");
    assert.equal(status.code, 0, servers[0]!.output());
    await alice.waitForStatus("reconnecting");
    await bob.waitForStatus("reconnecting");
    // Bob's network goes away (the page reports it offline), so only alice comes back at first.
    await bob.page.setOfflineMode(true);
    servers.push(await spawnServer(args, { permissions, port: Number(url.port) }));
    await alice.waitForStatus("online");
    await post(url, "lobby", "dave", "sent while bob was away");
    await alice.waitForMessage("sent while bob was away");
    await alice.send("alice after the restart");
    await alice.waitForMessage("alice after the restart");
    assert.notEqual(await bob.text("status"), "Online");
    await screenshot(bob, "restart-bob-away");

    await bob.page.setOfflineMode(false);
    await bob.waitForStatus("online");
    await bob.waitForMessage("sent while bob was away");
    await bob.waitForMessage("alice after the restart");
    await bob.send("bob after the restart");
    await alice.waitForMessage("bob after the restart");
    await bob.waitForMessage("bob after the restart");

    // Each attempt passes through "connecting"; bob's page may also have said "offline".
    const phases = (trace: string[]) =>
      trace.filter((s) => s !== "connecting").filter((s, i, all) => s !== all[i - 1]);
    assert.deepEqual(phases(await alice.statusTrace()), ["online", "reconnecting", "online"]);
    const bobPhases = phases(await bob.statusTrace());
    assert.deepEqual(bobPhases.slice(0, 2), ["online", "reconnecting"], bobPhases.join());
    assert.equal(bobPhases.at(-1), "online", bobPhases.join());

    const contents = [
      "before the restart",
      "sent while bob was away",
      "alice after the restart",
      "bob after the restart",
    ];
    const alicesRows = await alice.messages();
    for (const page of [alice, bob]) {
      const rows = await page.messages();
      assert.deepEqual(rows.map((m) => m.content), contents, page.name);
      assert.ok(rows.every((m) => !m.pending && /^\d+$/.test(m.id)), page.name);
      assert.equal(new Set(rows.map((m) => m.id)).size, rows.length, `${page.name}: duplicate ids`);
      assert.deepEqual(rows.map((m) => m.id), alicesRows.map((m) => m.id));
    }
    await screenshot(bob, "restart-after");
    assertClean(alice, bob);
  } finally {
    for (const server of servers) await server.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});

test("browser: markup in a message renders as text and never runs", async (browser) => {
  await using server = await startTestServer();
  const [alice, bob] = await browser.openAll(server.url, "alice", "bob");
  const payload = "<img src=x onerror=alert(1)>";
  await alice.send(payload);
  for (const page of [alice, bob]) {
    await page.waitForMessage(payload);
    const html = await page.page.$eval(
      "[data-testid=message-list] [data-testid=message] .content",
      (content) => content.innerHTML,
    );
    assert.equal(html, "&lt;img src=x onerror=alert(1)&gt;");
    assert.equal(await page.page.$$eval("[data-testid=message-list] img", (n) => n.length), 0);
  }
  await screenshot(bob, "xss");
  assertClean(alice, bob);
  // The dialog hook works: a real alert is caught (and dismissed).
  await bob.page.evaluate(() => alert("probe"));
  assert.deepEqual(bob.dialogs, ["probe"]);
});

test("browser: typing shows in the other page and the people list follows presence", async (browser) => {
  await using server = await startTestServer();
  const [alice, bob] = await browser.openAll(server.url, "alice", "bob");
  await waitForPeople(alice, ["alice", "bob"]);
  await waitForPeople(bob, ["alice", "bob"]);
  // Oneself first, marked.
  assert.deepEqual(
    await alice.page.$$eval(
      "[data-testid=user-item] .name",
      (names) => names.map((name) => name.textContent),
    ),
    ["alice (you)", "bob"],
  );

  await alice.type("hello");
  await bob.waitFor(
    "alice typing",
    () => document.querySelector("[data-testid=typing]")?.textContent === "alice is typing…",
  );
  assert.equal(await alice.text("typing"), "");
  await screenshot(bob, "typing");
  // Her message ends the indicator at once.
  await alice.page.keyboard.press("Enter");
  await bob.waitForMessage("hello");
  assert.equal(await bob.text("typing"), "");

  const carol = await browser.open(server.url, "carol");
  await waitForPeople(alice, ["alice", "bob", "carol"]);
  await waitForPeople(bob, ["alice", "bob", "carol"]);
  await carol.page.close();
  await waitForPeople(alice, ["alice", "bob"]);
  await waitForPeople(bob, ["alice", "bob"]);
  await screenshot(alice, "presence");
  assertClean(alice, bob, carol);
});
