/**
 * Regenerates `docs/screenshot.png`, the README's picture of the browser client: a server on a
 * free port with a memory store, three people (alice, bob, carol) in real Chromium pages, a few
 * rooms, a conversation of ten messages (one of them multi-line), an unread direct message and
 * someone typing, seen by alice at desktop size (1280×800).
 *
 * Run: `deno run -A docs/screenshot.ts`. Everything it starts is stopped before it exits.
 */
import { type ChatPage, type PageDocument, TestBrowser } from "../tests/helpers/browser.ts";
import { startTestServer } from "../tests/helpers/server.ts";

declare const document: PageDocument;

const OUTPUT = new URL("./screenshot.png", import.meta.url);

/** The conversation in #design, in order: who says what. */
const CONVERSATION: [string, string][] = [
  ["alice", "Morning! The new sidebar mock-ups are up on the board."],
  ["bob", "Nice, the unread badges read much better now."],
  [
    "carol",
    "Agreed. Two small things:\n1. the room list needs a hover state\n2. timestamps could be a touch lighter",
  ],
  ["alice", "Good catch, I'll fold both in."],
  ["alice", "Pushed. Reload when you get a chance."],
  ["bob", "Should direct messages sort by latest activity?"],
  ["carol", "Yes, that's how everyone reads them anyway."],
  ["bob", "Then I'll take that one."],
  ["alice", "Great. Release notes go out at 4 pm."],
  ["carol", "Looks good on my phone too."],
];

/** Joins (or creates) a room through the sidebar form and waits until it is on screen. */
async function joinRoom(page: ChatPage, room: string): Promise<void> {
  await page.page.type("[data-testid=join-room-input]", room);
  await page.page.keyboard.press("Enter");
  await page.waitFor(
    `#${room}`,
    (title) =>
      document.querySelector("[data-testid=conversation-title]")?.textContent === title &&
      document.querySelector("[data-testid=message-list] .start")?.textContent !== "Loading…",
    `#${room}`,
  );
}

/** Types a message line by line (Shift+Enter between lines) and sends it with Enter. */
async function say(page: ChatPage, content: string): Promise<void> {
  for (const [i, line] of content.split("\n").entries()) {
    if (i > 0) {
      await page.page.keyboard.down("Shift");
      await page.page.keyboard.press("Enter");
      await page.page.keyboard.up("Shift");
    }
    await page.type(line);
  }
  await page.page.keyboard.press("Enter");
}

if (import.meta.main) {
  await using server = await startTestServer();
  await using browser = await TestBrowser.launch();
  const alice = await browser.open(server.url, "alice");
  const bob = await browser.open(server.url, "bob");
  const carol = await browser.open(server.url, "carol");
  await joinRoom(alice, "releases");
  await joinRoom(carol, "random");
  for (const page of [alice, bob, carol]) await joinRoom(page, "design");

  const people = new Map([["alice", alice], ["bob", bob], ["carol", carol]]);
  for (const [who, content] of CONVERSATION) {
    await say(people.get(who)!, content);
    for (const page of people.values()) await page.waitForMessage(content);
  }

  // Bob writes to alice directly; she is reading #design, so it shows as unread.
  await bob.click("[data-testid=user-item][data-user=alice]");
  await bob.send("Got a minute after the release? Quick question about the API.");
  await alice.waitFor(
    "an unread direct message",
    () =>
      document.querySelector("[data-testid=dm-item][data-user=bob] [data-testid=unread]")
        ?.hidden === false,
  );
  // Carol starts on the next message.
  await carol.type("One more thing");
  await alice.waitFor(
    "carol typing",
    () => document.querySelector("[data-testid=typing]")?.textContent === "carol is typing…",
  );

  await alice.page.bringToFront();
  await alice.page.screenshot({ path: OUTPUT.pathname as `${string}.png` });
  console.log(`Saved ${OUTPUT.pathname}`);
}
