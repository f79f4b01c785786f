// A chat of 100,000 messages in the browser: it opens on its last page without loading the rest,
// older messages load on request, the search index in IndexedDB finds the oldest ones and the
// chat jumps to them, and a late edit or reaction to a message that is not in memory is applied
// when its part of the history is loaded (also across a reload).
//
// Sending 100,000 real messages through MLS would take minutes, so the history is written into
// alice's IndexedDB directly, in the layout the app stores (`chunkBytes` below; pinned by the
// Rust test `stored::tests::the_chunk_layout_the_browser_fixture_writes`) and with the head
// format of the previous release: the first open then also runs the one-time upgrade that reads
// and summarises the whole history, and indexes it in the background. Timings are printed, not
// asserted (BENCHMARKS.md).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, openDevice, signUp, waitOnline, screenshot } from "./harness.mjs";

const MESSAGES = 100_000;
const CHUNK = 256;

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  server?.stop();
});

const message = (page, text) => page.locator(".message", { hasText: text });

/** The id of synthetic message `i`: 16 bytes, recognisable, as the page's hex. */
function msgId(i) {
  return `f1${i.toString(16).padStart(30, "0")}`;
}

// Runs in the page: writes `count` messages from `sender` into chat `conv`, read by `reader`
// (hex ids).
async function writeHistory({ conv, sender, device, reader, count, chunk, now }) {
  const varint = (value, out) => {
    let v = BigInt(value);
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v) byte |= 0x80;
      out.push(byte);
    } while (v);
  };
  const utf8 = new TextEncoder();
  // One history entry, field by field in the order of anytime_client::timeline::Entry.
  const entry = (i, out) => {
    const id = `f1${i.toString(16).padStart(30, "0")}`;
    for (let b = 0; b < 32; b += 2) out.push(parseInt(id.slice(b, b + 2), 16));
    varint(i + 1, out); // seq
    varint(BigInt(`0x${sender}`), out);
    varint(BigInt(`0x${device}`), out);
    varint(now - (count - i) * 1000, out); // sent_at_ms: one a second, the last just now
    out.push(0); // kind: text
    const text = i === 7 ? "the secret word is pineapple" : i === 3 ? "an original draft about kiwis" : `history line ${i + 1}`;
    const body = utf8.encode(text);
    varint(body.length, out);
    for (const b of body) out.push(b);
    // reply_to, edited, deleted, own, reactions, delivered_to: none, false or empty.
    out.push(0, 0, 0, 0, 0, 0);
    // read_by: the reader (a history read long ago).
    out.push(1);
    varint(BigInt(`0x${reader}`), out);
    // expires_at_ms, mentions, forwarded, preview, starred, payment: none, false or empty.
    out.push(0, 0, 0, 0, 0, 0);
  };
  const chunkBytes = (n) => {
    const out = [1]; // format
    const end = Math.min(count, (n + 1) * chunk);
    varint(end - n * chunk, out);
    for (let i = n * chunk; i < end; i++) entry(i, out);
    return new Uint8Array(out);
  };
  const chunks = Math.ceil(count / chunk);
  const key = `tl:${BigInt(`0x${conv}`)}`;
  const head = [1]; // the head format before summaries (timer, unread, chunks)
  varint(0, head);
  varint(0, head);
  varint(chunks, head);
  const db = await new Promise((ok, fail) => {
    const open = indexedDB.open("anytime");
    open.onsuccess = () => ok(open.result);
    open.onerror = () => fail(open.error);
  });
  await new Promise((ok, fail) => {
    const tx = db.transaction(["kv", "search", "docs"], "readwrite");
    const kv = tx.objectStore("kv");
    kv.delete(IDBKeyRange.bound(`${key}:`, `${key}:\uffff`));
    kv.put(new Uint8Array(head), key);
    for (let n = 0; n < chunks; n++) kv.put(chunkBytes(n), `${key}:${n}`);
    tx.objectStore("search").clear();
    tx.objectStore("docs").clear();
    tx.oncomplete = ok;
    tx.onerror = () => fail(tx.error);
  });
  db.close();
}

/** Opens the app and waits for the chat with bob to show its newest message; milliseconds. */
async function openTimed(page, url, conv) {
  const started = Date.now();
  await page.goto(url);
  await page.locator(`.chat[data-conv="${conv}"]`).click({ timeout: 300_000 });
  await message(page, `history line ${MESSAGES}`).waitFor({ timeout: 120_000 });
  return Date.now() - started;
}

test("a chat of 100,000 messages opens on its last page, searches its index and loads back to a hit", { timeout: 600_000 }, async () => {
  let alice = await openDevice(browser, server.url);
  await signUp(alice, "alice");
  const bob = await openDevice(browser, server.url);
  await signUp(bob, "bob");
  await alice.getByRole("button", { name: "New chat" }).click();
  await alice.getByLabel("Username").fill("bob");
  await alice.getByRole("button", { name: "Start chat" }).click();
  await alice.locator("#chat-title", { hasText: "bob" }).waitFor();
  await alice.getByLabel("Message", { exact: true }).fill("hi bob");
  await alice.getByLabel("Message", { exact: true }).press("Enter");
  const conv = await alice.locator(".chat.active").getAttribute("data-conv");
  await bob.waitForFunction((c) => JSON.parse(window.anytime.chats()).some((x) => x.conv === c), conv);
  await bob.evaluate((c) => window.anytime.accept(c), conv);
  const bobAccount = JSON.parse(await bob.evaluate(() => window.anytime.account()));
  const aliceAccount = JSON.parse(await alice.evaluate(() => window.anytime.account()));

  // The history is written while alice's app is closed (it holds the store while open).
  const context = alice.context();
  await alice.close();
  const writer = await context.newPage();
  await writer.goto(`${server.url}/healthz`);
  const t0 = Date.now();
  await writer.evaluate(writeHistory,
    { conv, sender: bobAccount.user, device: bobAccount.device, reader: aliceAccount.user, count: MESSAGES, chunk: CHUNK,
      now: Date.now() });
  const written = Date.now() - t0;
  alice = writer;
  alice.on("console", (m) => { if ((m.type() === "error" && !m.text().includes("Content Security Policy"))) console.log("page:", m.text()); });

  const stats = () => alice.evaluate(() => JSON.parse(window.anytime.stats()));
  const upgrade = await openTimed(alice, server.url, conv);
  const whole = await stats();
  await waitOnline(alice);
  const reopen = await openTimed(alice, server.url, conv);
  const lazy = await stats();
  const again = await openTimed(alice, server.url, conv);
  const mib = (s) => (s.wasm_memory_bytes / 1048576).toFixed(1);
  console.log(`history of ${MESSAGES}: written in ${written} ms. First open (the upgrade from the layout without ` +
    `summaries loads it whole): store opened in ${whole.opened_in_ms} ms, ${whole.entries_in_memory} entries in memory, ` +
    `wasm memory ${mib(whole)} MiB, chat shown ${upgrade} ms after navigating. Then: store opened in ${lazy.opened_in_ms} ms, ` +
    `${lazy.entries_in_memory} of ${lazy.entries_stored} entries in memory, wasm memory ${mib(lazy)} MiB, chat shown after ` +
    `${reopen} ms (and ${again} ms once more)`);
  assert.equal(whole.entries_in_memory, MESSAGES, "the upgrade reads all of it, once");
  assert.ok(lazy.entries_in_memory < 2 * CHUNK, `${lazy.entries_in_memory} entries loaded at open`);
  assert.ok(lazy.entries_stored >= MESSAGES);

  // Only the newest part is in memory: asking for every entry gets what is loaded, and "more".
  const loaded = await alice.evaluate((c) => JSON.parse(window.anytime.chat(c, 1_000_000)), conv);
  assert.ok(loaded.entries.length < 2 * CHUNK, `${loaded.entries.length} entries in memory`);
  assert.equal(loaded.more, true);
  assert.ok(await alice.locator("#timeline .message").count() <= 50, "one page rendered");
  await screenshot(alice, "desktop-100k-chat-last-page");
  await alice.getByRole("button", { name: "Load earlier messages" }).click();
  await message(alice, `history line ${MESSAGES - 60}`).waitFor();
  // A page further back than what was in memory at first.
  for (let i = 0; i < 12; i++) await alice.getByRole("button", { name: "Load earlier messages" }).click();
  await message(alice, `history line ${MESSAGES - 600}`).waitFor();

  // Bob edits and reacts to two of the oldest messages (not in alice's memory): pending.
  await waitOnline(bob);
  await bob.evaluate(async ({ c, edit, react }) => {
    await window.anytime.edit(c, edit, "edited long ago");
    await window.anytime.react(c, react, "👍", false);
    await window.anytime.send(c, "did you see?");
  }, { c: conv, edit: msgId(3), react: msgId(4) });
  await message(alice, "did you see?").waitFor();
  // Pending effects are kept with the history: a reload does not lose them.
  await openTimed(alice, server.url, conv);
  await waitOnline(alice);

  // The history from before the index existed is indexed in the background, newest first.
  const t2 = Date.now();
  await alice.waitForFunction(() => window.anytime.unindexed() === 0, null, { timeout: 300_000, polling: 500 });
  console.log(`background indexing of ${MESSAGES} messages finished ${Date.now() - t2} ms after the last reload`);

  const timings = await alice.evaluate(async () => {
    const timed = async (query) => {
      const started = performance.now();
      const hits = JSON.parse(await window.anytime.search(query));
      return `${JSON.stringify(query)} ${hits.length} hits in ${Math.round(performance.now() - started)} ms`;
    };
    return [await timed("pineapple"), await timed("history"), await timed("history line"), await timed("line 9999")];
  });
  console.log(`search of ${MESSAGES} indexed messages: ${timings.join("; ")}`);

  // The index finds the oldest message; opening the hit loads the history back to it.
  await alice.getByLabel("Search messages").fill("PINEAPPLE");
  const hit = alice.getByRole("list", { name: "Search results" }).locator(".result", { hasText: "pineapple" });
  await hit.waitFor({ timeout: 30_000 });
  const t1 = Date.now();
  await hit.click();
  await alice.locator(".message.highlight", { hasText: "the secret word is pineapple" }).waitFor({ timeout: 60_000 });
  console.log(`jump to the oldest message (loads ${Math.ceil(MESSAGES / CHUNK)} chunks): ${Date.now() - t1} ms`);
  await screenshot(alice, "desktop-search-hit-in-old-history");
  await message(alice, "edited long ago").waitFor();
  const all = await alice.evaluate((c) => JSON.parse(window.anytime.chat(c, 1_000_000)), conv);
  assert.ok(all.entries.length >= MESSAGES, `${all.entries.length} entries after loading back`);
  assert.equal(all.more, false);
  const third = all.entries.find((e) => e.msg_id === msgId(3));
  assert.deepEqual([third.text, third.edited], ["edited long ago", true], "the late edit was applied");
  const fourth = all.entries.find((e) => e.msg_id === msgId(4));
  assert.deepEqual(fourth.reactions.map((r) => r.emoji), ["👍"], "the late reaction was applied");
  // Far back, the hit is shown in a page of its own with a way back to the newest.
  assert.ok(await alice.locator("#timeline .message").count() <= 100);
  await alice.getByRole("button", { name: "Jump to the newest messages" }).click();
  await message(alice, "did you see?").waitFor();

  // The edit is in the index now (the message was re-indexed when its chunk was loaded), and
  // stays so after a reload; the old words are not found any more.
  await alice.getByLabel("Search messages").fill("");
  await openTimed(alice, server.url, conv);
  await alice.getByLabel("Search messages").fill("edited long");
  await alice.locator(".result", { hasText: "edited long ago" }).waitFor({ timeout: 30_000 });
  await alice.getByLabel("Search messages").fill("kiwis");
  await alice.getByText("No messages found on this device").waitFor();
  await alice.getByLabel("Search messages").fill("pineapple");
  await alice.locator(".result", { hasText: "pineapple" }).waitFor();
});
