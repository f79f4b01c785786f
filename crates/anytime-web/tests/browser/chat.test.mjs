// The web client end to end in headless Chromium against a real server: two browsers chat
// both ways (reply, react, edit, delete, receipts, typing, presence), a third joins a group by
// invite link, a reload keeps history, a CLI user and browser users share a group, logging out
// wipes the browser's store. Screenshots of the main screens land in target/browser-artifacts.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import {
  startServer, launchBrowser, openDevice, signUp, waitOnline, screenshot, cli, cliAsync, cliBackground, tempProfile,
  unlabelled,
  PHONE, DESKTOP,
} from "./harness.mjs";

let server;
let browser;
const pages = {};

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  server?.stop();
});

const message = (page, text) => page.locator(".message", { hasText: text });
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
// The CLI user of the shared group, for the tests after the one that makes it.
let terminal = null;

async function openChatNamed(page, title) {
  // At phone width the list and the chat are separate screens.
  const back = page.getByRole("button", { name: "Back to chats" });
  if (await back.isVisible()) await back.click();
  // The title, maybe followed by its flags (" 📌", " 🔕").
  const exact = page.locator(".title", { hasText: new RegExp(`^${title}(\\s|$)`) });
  await page.locator(".chat").filter({ has: exact }).click();
  await page.locator("#chat-title", { hasText: title }).waitFor();
}

async function send(page, text) {
  await page.getByLabel("Message", { exact: true }).fill(text);
  await page.getByLabel("Message", { exact: true }).press("Enter");
  await message(page, text).waitFor();
}

test("sign up: labelled form, keyboard order, screenshots at both widths", async () => {
  const phone = await openDevice(browser, server.url, PHONE);
  await phone.getByRole("button", { name: "Sign up" }).waitFor();
  assert.deepEqual(await unlabelled(phone), []);
  // Keyboard: the username field has focus, Tab goes to password, then to the button.
  await phone.getByLabel("Username").focus();
  await phone.keyboard.press("Tab");
  assert.equal(await phone.evaluate(() => document.activeElement.id), "password");
  await phone.keyboard.press("Tab");
  assert.equal(await phone.evaluate(() => document.activeElement.textContent), "Sign up");
  await screenshot(phone, "phone-sign-up");
  await phone.context().close();

  pages.alice = await openDevice(browser, server.url, DESKTOP);
  await signUp(pages.alice, "alice");
  pages.bob = await openDevice(browser, server.url, PHONE);
  await signUp(pages.bob, "bob");
});

test("direct chat: messages both ways, unread, reply, react, edit, delete, receipts, typing, presence", async () => {
  const { alice, bob } = pages;
  await alice.getByRole("button", { name: "New chat" }).click();
  await alice.getByLabel("Username").fill("bob");
  await alice.getByRole("button", { name: "Start chat" }).click();
  await alice.locator("#chat-title", { hasText: "bob" }).waitFor();
  await send(alice, "hello bob");

  // Bob never talked with alice: her first message is a message request, not a chat yet.
  const requests = bob.locator("[data-testid=requests]", { hasText: "Message requests (1)" });
  await requests.waitFor();
  assert.equal(await bob.locator(".chat", { hasText: "alice" }).count(), 0, "not among the chats");
  await screenshot(bob, "phone-chat-list-with-requests");
  await requests.click();
  const item = bob.locator(".chat", { hasText: "alice" });
  await item.locator("[data-testid=unread]", { hasText: "1" }).waitFor();
  await item.locator(".preview", { hasText: "hello bob" }).waitFor();
  await screenshot(bob, "phone-chat-list");
  await item.click();
  await message(bob, "hello bob").waitFor();
  // Seen, but alice cannot tell until bob accepts; bob cannot write yet either.
  await bob.getByRole("region", { name: "Message request" }).waitFor();
  assert.equal(await bob.getByLabel("Message", { exact: true }).isVisible(), false);
  await screenshot(bob, "phone-message-request");
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(await alice.locator(".message.own .receipt[data-status=read]").count(), 0, "no read receipt for a request");
  await bob.getByRole("button", { name: "Accept" }).click();
  await bob.getByRole("region", { name: "Message request" }).waitFor({ state: "detached" });

  // Alice sees "read" once Bob accepted, and Bob online.
  await alice.locator(".message.own .receipt[data-status=read]").waitFor();
  await alice.locator("#chat-sub", { hasText: "online" }).waitFor();

  // Typing indicator.
  await bob.getByLabel("Message", { exact: true }).type("hi");
  await alice.locator("#chat-sub", { hasText: "typing" }).waitFor();

  // Bob replies to Alice's message.
  await message(bob, "hello bob").getByRole("button", { name: "Reply" }).click();
  await bob.getByLabel("Message", { exact: true }).fill("hi alice");
  await bob.getByRole("button", { name: "Send", exact: true }).click();
  const reply = message(alice, "hi alice");
  await reply.waitFor();
  // A one-word bubble is as wide as its text, not the whole column; its actions show on hover.
  const [bubbleWidth, columnWidth] = await message(alice, "hi alice").evaluate((el) =>
    [el.getBoundingClientRect().width, el.parentElement.getBoundingClientRect().width]);
  assert.ok(bubbleWidth < columnWidth / 2, `bubble ${bubbleWidth}px of ${columnWidth}px`);
  const actions = message(alice, "hi alice").locator(".actions");
  await alice.mouse.move(0, 0);
  assert.equal(await actions.evaluate((el) => getComputedStyle(el).opacity), "0");
  await message(alice, "hi alice").hover();
  await alice.waitForFunction((el) => getComputedStyle(el).opacity === "1", await actions.elementHandle());
  // The message ends the typing indicator at once (it used to linger for seconds).
  const typingGoneBy = Date.now() + 1_000;
  while ((await alice.locator("#chat-sub", { hasText: "typing" }).count()) > 0) {
    assert.ok(Date.now() < typingGoneBy, "'typing…' still shown a second after bob's message arrived");
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.match(await reply.locator(".quote").textContent(), /hello bob/);

  // Alice reacts to Bob's reply; Bob sees it.
  await reply.getByRole("button", { name: "React with thumbs up" }).click();
  await message(bob, "hi alice").locator(".reaction", { hasText: "👍 1" }).waitFor();

  // Alice edits, then deletes her first message; Bob sees both.
  await message(alice, "hello bob").getByRole("button", { name: "Edit" }).click();
  await alice.getByLabel("Message", { exact: true }).fill("hello bob, edited");
  await alice.getByLabel("Message", { exact: true }).press("Enter");
  const edited = message(bob, "hello bob, edited");
  await edited.locator(".edited").waitFor();
  await screenshot(alice, "desktop-conversation");
  await screenshot(bob, "phone-conversation");
  await message(alice, "hello bob, edited").getByRole("button", { name: "Delete" }).click();
  await bob.locator(".message.deleted", { hasText: "This message was deleted" }).waitFor();
  assert.equal(await message(bob, "hello bob, edited").count(), 0);

  // Keyboard: focus the composer with the keyboard alone and send with Enter.
  await bob.getByLabel("Message", { exact: true }).focus();
  await bob.keyboard.type("sent from the keyboard");
  await bob.keyboard.press("Enter");
  await message(alice, "sent from the keyboard").waitFor();
  assert.deepEqual(await unlabelled(alice), []);
  assert.deepEqual(await unlabelled(bob), []);
});

test("contact profile shows the same safety number on both sides", async () => {
  const { alice, bob } = pages;
  await alice.getByRole("button", { name: "Info" }).click();
  const aliceDigits = await alice.locator("#safety-number").textContent();
  await screenshot(alice, "desktop-contact-safety");
  await alice.getByRole("button", { name: "Mark as verified" }).click();
  await bob.getByRole("button", { name: "Info" }).click();
  const bobDigits = await bob.locator("#safety-number").textContent();
  assert.equal(aliceDigits, bobDigits);
  // Twelve groups of five digits, as the core makes them (the page used to regroup the spaces).
  assert.match(aliceDigits, /^[0-9]{5}( [0-9]{5}){11}$/);
  await bob.getByRole("button", { name: "Close" }).click();
});

test("disappearing messages: the timer is set from the contact profile and reaches the other side", async () => {
  const { alice, bob } = pages;
  await alice.getByRole("button", { name: "Info" }).click();
  await alice.getByLabel("Disappearing messages").selectOption("3600");
  await alice.locator("#toast", { hasText: "Disappearing messages updated" }).waitFor();
  await alice.getByRole("button", { name: "Close" }).click();
  await bob.locator(".notice", { hasText: "disappearing messages: 1 h" }).waitFor();
  await send(bob, "this one disappears in an hour");
  const expires = await alice.evaluate((conv) => {
    const chat = JSON.parse(window.anytime.chat(conv, 1000));
    return chat.entries.find((e) => e.text === "this one disappears in an hour")?.expires_at_ms;
  }, await alice.locator(".chat.active").getAttribute("data-conv"));
  assert.ok(expires > Date.now() + 3_500_000 && expires < Date.now() + 3_700_000, `expires_at_ms ${expires}`);
  await alice.getByRole("button", { name: "Info" }).click();
  await alice.getByLabel("Disappearing messages").selectOption("0");
  await alice.getByRole("button", { name: "Close" }).click();
  await bob.locator(".notice", { hasText: "disappearing messages: off" }).waitFor();
});

test("group: invite link brings a third browser in; everyone reads everyone", async () => {
  const { alice, bob } = pages;
  await alice.getByRole("button", { name: "New group" }).click();
  await alice.getByLabel("Group name").fill("Trip");
  await alice.getByLabel("Members (usernames, separated by commas)").fill("bob");
  await alice.getByRole("button", { name: "Create group" }).click();
  await alice.locator("#chat-title", { hasText: "Trip" }).waitFor();
  await send(alice, "welcome to the trip");

  await alice.getByRole("button", { name: "Info" }).click();
  await alice.getByRole("button", { name: "Create invite link" }).click();
  await alice.locator("#invite-link", { hasText: "#join=" }).waitFor();
  const link = (await alice.locator("#invite-link").textContent()).trim();
  await screenshot(alice, "desktop-group-info");
  await alice.getByRole("button", { name: "Close" }).click();

  // Carol signs up from the invite link and lands in the group.
  const carol = await openDevice(browser, link, DESKTOP);
  pages.carol = carol;
  await signUp(carol, "carol");
  await carol.locator("#chat-title", { hasText: "Trip" }).waitFor();
  // Alice's device adds Carol's device to the MLS group; then Carol can write.
  await alice.locator("#chat-sub", { hasText: "3 members" }).waitFor();
  await carol.waitForFunction(() => {
    const chats = JSON.parse(window.anytime.chats());
    return chats.some((c) => c.title === "Trip");
  });
  await sendWhenMember(carol, "carol here");
  await openChatNamed(bob, "Trip");
  await message(bob, "carol here").waitFor();
  // In a group, others' messages carry the sender's avatar (initials) at the start of a run.
  assert.equal((await message(bob, "carol here").locator(".avatar").textContent()).trim(), "CA");
  await message(alice, "carol here").waitFor();
  await send(bob, "hi carol");
  await message(carol, "hi carol").waitFor();
  // Carol joined after "welcome to the trip": MLS gives her no key for it.
  assert.equal(await message(carol, "welcome to the trip").count(), 0);
});

/** A new member can send once a member's device has added it to the encryption group. */
async function sendWhenMember(page, text) {
  for (let attempt = 0; attempt < 20; attempt++) {
    await page.getByLabel("Message", { exact: true }).fill(text);
    await page.getByLabel("Message", { exact: true }).press("Enter");
    try {
      await message(page, text).waitFor({ timeout: 1_500 });
      return;
    } catch (_) { /* not in the group yet: the composer keeps the text */ }
  }
  throw new Error(`${text}: never became a member of the encryption group`);
}

test("a reload keeps the history and can still decrypt new messages", async () => {
  const { alice, bob } = pages;
  await bob.reload();
  await waitOnline(bob);
  await openChatNamed(bob, "Trip");
  await message(bob, "carol here").waitFor();
  await message(bob, "welcome to the trip").waitFor();
  await send(alice, "after the reload");
  await message(bob, "after the reload").waitFor();
});

test("two tabs of one profile: the second waits while the first works, then takes over", async () => {
  const { alice, bob } = pages;
  const second = await bob.context().newPage();
  second.on("pageerror", (e) => console.error("page error:", e.message));
  await second.goto(server.url);
  await second.getByTestId("open-elsewhere").waitFor();
  // The first tab keeps working both ways meanwhile.
  await openChatNamed(alice, "bob");
  await send(alice, "while bob has two tabs");
  await openChatNamed(bob, "alice");
  await message(bob, "while bob has two tabs").waitFor();
  await send(bob, "from bob's first tab");
  await message(alice, "from bob's first tab").waitFor();
  assert.equal(await second.getByTestId("open-elsewhere").count(), 1, "the second tab still waits");
  // The first tab closes: the second takes over the same state and keeps reading and writing.
  await bob.close();
  await waitOnline(second);
  await openChatNamed(second, "alice");
  await message(second, "from bob's first tab").waitFor();
  await send(alice, "to bob's second tab");
  await message(second, "to bob's second tab").waitFor();
  await send(second, "from bob's second tab");
  await message(alice, "from bob's second tab").waitFor();
  assert.equal(await message(second, "cannot decrypt").count(), 0);
  assert.equal(await message(alice, "cannot decrypt").count(), 0);
  pages.bob = second;
  await openChatNamed(alice, "Trip");
  await openChatNamed(second, "Trip");
});

test("a CLI user and browser users talk in the same group", async () => {
  const { alice, carol } = pages;
  const dave = tempProfile();
  cli(dave, "register", "--server", server.url, "dave", "--password", "password-dave");
  await alice.getByRole("button", { name: "Info" }).click();
  await alice.getByLabel("Add members (usernames, commas)").fill("dave");
  await alice.getByRole("button", { name: "Add", exact: true }).click();
  await alice.locator(".members li", { hasText: "dave" }).waitFor();
  await alice.getByRole("button", { name: "Close" }).click();
  await alice.locator("#chat-sub", { hasText: "4 members" }).waitFor();

  const chats = cli(dave, "chats");
  const trip = chats.find((c) => c.name === "Trip");
  assert.ok(trip, `dave's chats: ${JSON.stringify(chats)}`);
  terminal = { profile: dave, conv: String(trip.conv) };
  cli(dave, "send", String(trip.conv), "hello from the terminal");
  await message(alice, "hello from the terminal").waitFor();
  await message(carol, "hello from the terminal").waitFor();

  await send(alice, "hello terminal, from the browser");
  let seen = false;
  for (let attempt = 0; attempt < 20 && !seen; attempt++) {
    cli(dave, "sync");
    seen = cli(dave, "history", String(trip.conv)).some((e) => e.text === "hello terminal, from the browser");
    if (!seen) await new Promise((r) => setTimeout(r, 300));
  }
  assert.ok(seen, "the CLI user decrypted the browser user's message");

  // dave keeps `follow` running and sends from other terminals at the same time, while alice
  // writes from the browser: one writer per profile, so nothing becomes undecryptable.
  const follow = cliBackground(dave, "follow");
  try {
    let ready = false;
    for (let attempt = 0; attempt < 100 && !ready; attempt++) {
      ready = existsSync(join(dave, "anytime.sock"));
      if (!ready) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(ready, "follow serves dave's profile");
    const burst = Array.from({ length: 10 }, (_, i) => `terminal burst #${String(i).padStart(2, "0")}`);
    const sends = burst.map((text) => cliAsync(dave, "send", String(trip.conv), text));
    const fromBrowser = ["browser burst A", "browser burst B", "browser burst C"];
    for (const text of fromBrowser) await send(alice, text);
    await Promise.all(sends);
    for (const text of burst) {
      await message(alice, text).waitFor();
      await message(carol, text).waitFor();
    }
    assert.equal(await message(alice, "cannot decrypt").count(), 0);
    assert.equal(await message(carol, "cannot decrypt").count(), 0);
    let followed = [];
    for (let attempt = 0; attempt < 100; attempt++) {
      followed = follow.lines();
      if (fromBrowser.every((t) => followed.some((e) => e.type === "message" && e.text === t))) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const text of fromBrowser) assert.ok(followed.some((e) => e.text === text), `follow showed ${text}`);
    assert.deepEqual(followed.filter((e) => e.type === "undecryptable"), []);
  } finally {
    follow.stop();
  }
});

test("files: a terminal's file downloads in the browser with the same SHA-256, and a browser's photo reaches the terminal", async () => {
  const { alice } = pages;
  assert.ok(terminal, "runs after the CLI group test");
  const { profile: dave, conv } = terminal;
  const notes = randomBytes(300_000 + 17);
  const notesPath = join(dave, "notes.bin");
  writeFileSync(notesPath, notes);
  cli(dave, "send-file", conv, notesPath, "--caption", "from the terminal");
  const card = message(alice, "notes.bin");
  await card.waitFor();
  await card.locator(".file-size", { hasText: "300.0 kB" }).waitFor();
  const [download] = await Promise.all([
    alice.waitForEvent("download"),
    card.getByRole("button", { name: "Download" }).click(),
  ]);
  assert.equal(download.suggestedFilename(), "notes.bin");
  assert.equal(sha256(readFileSync(await download.path())), sha256(notes), "the same bytes in the browser");

  const photo = randomBytes(200_000);
  await alice.locator("#attach-input").setInputFiles({ name: "view.jpg", mimeType: "image/jpeg", buffer: photo });
  await message(alice, "view.jpg").waitFor();
  let sent = null;
  for (let attempt = 0; attempt < 30 && !sent; attempt++) {
    cli(dave, "sync");
    sent = cli(dave, "history", conv).find((e) => e.kind === "attachment" && e.attachment?.name === "view.jpg");
    if (!sent) await new Promise((r) => setTimeout(r, 300));
  }
  assert.ok(sent, "the terminal received the browser's file");
  assert.equal(sent.attachment.mime, "image/jpeg");
  const saved = cli(dave, "download", conv, sent.msg_id, "--output", join(dave, "view.jpg"));
  assert.equal(saved.at(-1).sha256, sha256(photo), "the same bytes in the terminal");
  assert.ok(!server.blobsContain(photo.subarray(1000, 1064)), "the server keeps only ciphertext");
  await screenshot(alice, "chat-file-message");
});

test("group info: rename, make admin, remove a member", async () => {
  const { alice, bob } = pages;
  await openChatNamed(alice, "Trip");
  await alice.getByRole("button", { name: "Info" }).click();
  await alice.getByLabel("Group name").fill("Road trip");
  await alice.getByRole("button", { name: "Rename" }).click();
  await alice.getByRole("button", { name: "Close" }).click();
  await alice.locator("#chat-title", { hasText: "Road trip" }).waitFor();
  await bob.locator("#chat-title", { hasText: "Road trip" }).waitFor();

  await alice.getByRole("button", { name: "Info" }).click();
  const bobRow = alice.locator(".members li", { hasText: "bob" });
  await bobRow.getByRole("button", { name: "Make admin" }).click();
  await alice.locator(".members li", { hasText: "bob (admin)" }).waitFor();
  const daveRow = alice.locator(".members li", { hasText: "dave" });
  await daveRow.getByRole("button", { name: "Remove" }).click();
  await alice.locator(".members li", { hasText: "dave" }).waitFor({ state: "detached" });
  await alice.getByRole("button", { name: "Close" }).click();
  await alice.locator("#chat-sub", { hasText: "3 members" }).waitFor();
});

test("linked device: a second browser logs in, is approved from the first, and reads new messages", async () => {
  const { alice, bob } = pages;
  const second = await openDevice(browser, server.url, PHONE);
  await second.getByRole("button", { name: "I already have an account: log in" }).click();
  await second.getByLabel("Username").fill("alice");
  await second.getByLabel("Password").fill("password-alice");
  await second.getByRole("button", { name: "Log in" }).click();
  const toastText = await second.locator("#toast", { hasText: "code" }).textContent();
  const code = toastText.match(/code (\S+)/)[1];

  await alice.getByRole("button", { name: "Devices" }).click();
  await alice.getByLabel("Link a new device: its approval code").fill(code);
  await alice.getByRole("button", { name: "Approve" }).click();
  await waitOnline(second);
  // Alice's first browser adds the new device to her groups; new messages reach it.
  await second.locator(".chat", { hasText: "bob" }).waitFor();
  await alice.getByRole("button", { name: "Devices" }).click();
  await alice.locator(".members li", { hasText: "(this browser)" }).waitFor();
  assert.equal(await alice.locator(".members li").count(), 2);
  await screenshot(alice, "desktop-linked-devices");
  await alice.getByRole("button", { name: "Close" }).click();
  await openChatNamed(bob, "alice");
  for (let attempt = 0; attempt < 20; attempt++) {
    await send(bob, `to both of alice's devices ${attempt}`);
    try {
      await openChatNamed(second, "bob");
      await message(second, `to both of alice's devices ${attempt}`).waitFor({ timeout: 1_500 });
      break;
    } catch (error) {
      if (attempt === 19) throw error;
    }
  }
  // Alice verified Bob's safety number earlier; her new device changed it: she is warned.
  await openChatNamed(alice, "bob");
  await alice.getByRole("alert").filter({ hasText: "safety number changed" }).waitFor();
  await screenshot(alice, "desktop-key-change-warning");
  await second.context().close();
});

test("installable: manifest and service worker", async () => {
  const { alice } = pages;
  const manifest = await alice.evaluate(async () => (await fetch("/manifest.webmanifest")).json());
  assert.equal(manifest.name, "Anytime");
  assert.equal(manifest.display, "standalone");
  const scope = await alice.evaluate(async () => (await navigator.serviceWorker.ready).scope);
  assert.equal(scope, `${server.url}/`);
  const csp = await alice.evaluate(async () => (await fetch("/")).headers.get("content-security-policy"));
  assert.match(csp, /script-src 'self' 'wasm-unsafe-eval'/);
  // The wasm travels precompressed.
  const encoding = await alice.evaluate(async () => (await fetch("/pkg/anytime_web_bg.wasm", { cache: "no-store" })).headers.get("content-encoding"));
  assert.equal(encoding, "gzip");
});

test("presence privacy: 'Nobody' hides being online", async () => {
  const { alice, bob } = pages;
  await openChatNamed(alice, "bob");
  await alice.locator("#chat-sub", { hasText: "online" }).waitFor();
  await bob.getByRole("button", { name: "Back to chats" }).click();
  await bob.getByRole("button", { name: "Settings" }).click();
  await bob.getByLabel("Nobody").check();
  await bob.locator("#toast", { hasText: "Saved" }).waitFor();
  await bob.getByRole("button", { name: "Close" }).click();
  // Presence is re-read on the next subscription: reload Alice's page.
  await alice.reload();
  await waitOnline(alice);
  await openChatNamed(alice, "bob");
  await alice.locator(".message").first().waitFor();
  assert.doesNotMatch(await alice.locator("#chat-sub").textContent(), /online/);
  await bob.getByRole("button", { name: "Settings" }).click();
  await bob.getByLabel("Everyone").check();
  await bob.locator("#toast", { hasText: "Saved" }).waitFor();
  await bob.getByRole("button", { name: "Close" }).click();
  // The same check sees "online" again once allowed: the absence above was the setting.
  await alice.reload();
  await waitOnline(alice);
  await openChatNamed(alice, "bob");
  await alice.locator("#chat-sub", { hasText: "online" }).waitFor();
});

test("the server crashes and restarts: browsers reconnect and resume", async () => {
  const { alice, bob } = pages;
  await server.crashAndRestart();
  await waitOnline(alice);
  await waitOnline(bob);
  await openChatNamed(bob, "alice");
  await send(alice, "after the crash");
  await message(bob, "after the crash").waitFor();
  await send(bob, "back to you");
  await message(alice, "back to you").waitFor();
});

test("offline: a message written while the server is down waits as pending, then goes out once", async () => {
  const { alice, bob } = pages;
  await openChatNamed(alice, "bob");
  await server.crash();
  await alice.waitForFunction(() => window.anytime.status().startsWith("offline"), null, { timeout: 30_000 });
  await alice.getByLabel("Message", { exact: true }).fill("written offline");
  await alice.getByLabel("Message", { exact: true }).press("Enter");
  await message(alice, "written offline").locator(".receipt[data-status=pending]").waitFor();
  assert.equal(await alice.getByLabel("Message", { exact: true }).inputValue(), "", "kept as pending, not handed back");
  assert.equal(await message(alice, "written offline").locator(".actions").count(), 0, "nothing to edit before it is sent");
  await screenshot(alice, "desktop-pending-bubble");
  await server.restart();
  await waitOnline(alice);
  await alice.locator(".message", { hasText: "written offline" }).locator(".receipt:not([data-status=pending])").waitFor();
  await waitOnline(bob);
  await openChatNamed(bob, "alice");
  await message(bob, "written offline").waitFor();
  assert.equal(await message(alice, "written offline").count(), 1, "one bubble: the pending one became the sent one");
  assert.equal(await message(bob, "written offline").count(), 1, "delivered once");
});

test("date separator, unread divider with a jump to it, avatars in the chat list", async () => {
  const { alice, bob } = pages;
  const aliceChat = bob.locator(".chat").filter({ has: bob.locator(".title", { hasText: /^alice$/ }) });
  const badge = aliceChat.locator("[data-testid=unread]");
  await openChatNamed(bob, "alice"); // read what is there,
  await badge.waitFor({ state: "detached" });
  await openChatNamed(bob, "Road trip"); // then look away
  const conv = await alice.locator(".chat.active").getAttribute("data-conv");
  for (const text of ["unread one", "unread two", "unread three"]) {
    await alice.evaluate(([c, t]) => window.anytime.send(c, t), [conv, text]);
  }
  // At phone width the list is a screen of its own, hidden while a chat is open.
  await aliceChat.locator("[data-testid=unread]", { hasText: "3" }).waitFor({ state: "attached" });
  await openChatNamed(bob, "alice");
  const divider = bob.locator("#unread-divider");
  await divider.waitFor();
  // The divider sits right before the first unread message, and stays after they are read.
  const next = await divider.evaluate((el) => el.nextElementSibling.querySelector(".text").textContent);
  assert.equal(next, "unread one");
  await alice.locator(".message", { hasText: "unread three" }).locator(".receipt[data-status=read]").waitFor();
  assert.equal(await divider.count(), 1);
  await bob.locator(".timeline .day", { hasText: "Today" }).first().waitFor();
  const jump = bob.getByRole("button", { name: "↑ First unread" });
  assert.equal(await jump.isVisible(), false, "not offered while the divider is in sight");
  await bob.locator("#timeline").evaluate((el) => { el.scrollTop = 0; });
  await jump.click();
  await bob.waitForFunction(() => {
    const d = document.getElementById("unread-divider").getBoundingClientRect();
    const t = document.getElementById("timeline").getBoundingClientRect();
    return d.top >= t.top - 1 && d.bottom <= t.bottom + 1;
  });
  await screenshot(bob, "phone-unread-divider");
  assert.ok(await alice.locator(".chat .avatar").count() >= 2, "every chat in the list has an avatar");
});

test("search: finds messages on this device across chats and jumps to one", async () => {
  const { alice } = pages;
  await alice.getByLabel("Search messages").fill("CRASH");
  const result = alice.getByRole("list", { name: "Search results" }).locator(".result", { hasText: "after the crash" });
  await result.waitFor();
  assert.equal(await result.locator("mark").textContent(), "crash", "the match is highlighted, case kept");
  await alice.getByLabel("Search messages").fill("carol here");
  await alice.locator(".result", { hasText: "Road trip" }).waitFor();
  await screenshot(alice, "desktop-search-results");
  await alice.locator(".result", { hasText: "Road trip" }).click();
  await alice.locator("#chat-title", { hasText: "Road trip" }).waitFor();
  await alice.locator(".message.highlight", { hasText: "carol here" }).waitFor();
  await alice.getByLabel("Search messages").fill("no such words anywhere");
  await alice.getByText("No messages found on this device").waitFor();
  await alice.getByLabel("Search messages").fill("");
  await alice.locator(".chat", { hasText: "bob" }).first().waitFor();
});

test("a long chat opens on its last page; earlier messages load on request", async () => {
  const { alice } = pages;
  await openChatNamed(alice, "bob");
  const conv = await alice.locator(".chat.active").getAttribute("data-conv");
  await alice.evaluate(async (c) => {
    for (let i = 1; i <= 130; i++) await window.anytime.send(c, `bulk ${i}`);
  }, conv);
  await openChatNamed(alice, "Road trip");
  await openChatNamed(alice, "bob");
  await message(alice, "bulk 130").waitFor();
  const shown = await alice.locator("#timeline .message").count();
  assert.ok(shown <= 50, `${shown} messages rendered on opening`);
  assert.equal(await message(alice, "bulk 80").count(), 0, "older pages are not rendered");
  const last = await message(alice, "bulk 130").boundingBox();
  const box = await alice.locator("#timeline").boundingBox();
  assert.ok(last.y + last.height <= box.y + box.height + 1, "opens scrolled to the newest message");
  await screenshot(alice, "desktop-long-chat-last-page");
  await alice.getByRole("button", { name: "Load earlier messages" }).click();
  await message(alice, "bulk 80").waitFor();
  assert.ok(await alice.locator("#timeline .message").count() > shown, "a page more is shown");
});

test("drafts are kept per chat (and across a reload); pin, mute and archive a chat", async () => {
  const { alice } = pages;
  await openChatNamed(alice, "bob");
  await alice.getByLabel("Message", { exact: true }).fill("half-written thought");
  await openChatNamed(alice, "Road trip");
  const bobChat = alice.locator(".chat").filter({ has: alice.locator(".title", { hasText: /^bob/ }) });
  await bobChat.locator(".preview.draft", { hasText: "Draft: half-written thought" }).waitFor();
  assert.equal(await alice.getByLabel("Message", { exact: true }).inputValue(), "", "each chat has its own draft");
  await alice.reload();
  await waitOnline(alice);
  await openChatNamed(alice, "bob");
  assert.equal(await alice.getByLabel("Message", { exact: true }).inputValue(), "half-written thought");
  await alice.getByLabel("Message", { exact: true }).press("Enter");
  await message(alice, "half-written thought").waitFor();

  // Pin the group: it goes to the top of the list.
  await openChatNamed(alice, "Road trip");
  await bobChat.locator(".preview", { hasText: "You: half-written thought" }).waitFor();
  assert.equal(await bobChat.locator(".preview.draft").count(), 0, "sent: no draft left");
  await alice.getByRole("button", { name: "Info" }).click();
  await alice.getByRole("button", { name: "Pin chat" }).click();
  await alice.locator(".chat [data-flag=pinned]").waitFor();
  assert.equal(await alice.locator(".chat .title").first().evaluate((el) => el.firstChild.textContent), "Road trip");
  // Mute bob: marked, and its unread badge turns grey.
  await openChatNamed(alice, "bob");
  await alice.getByRole("button", { name: "Info" }).click();
  await alice.getByRole("button", { name: "Mute" }).click();
  await bobChat.locator("[data-flag=muted]").waitFor();
  // Archive bob: out of the list, under "Archived (1)", and back.
  await alice.getByRole("button", { name: "Info" }).click();
  await alice.getByRole("button", { name: "Archive" }).click();
  await bobChat.waitFor({ state: "detached" });
  await screenshot(alice, "desktop-pinned-and-archived");
  await alice.locator("[data-testid=archived]", { hasText: "Archived (1)" }).click();
  await bobChat.click();
  await alice.getByRole("button", { name: "Info" }).click();
  await alice.getByRole("button", { name: "Unarchive" }).click();
  await alice.getByRole("button", { name: "Info" }).click();
  await alice.getByRole("button", { name: "Unmute" }).click();
  await alice.locator("[data-testid=archived]").waitFor({ state: "detached" });
  await bobChat.locator("[data-flag=muted]").waitFor({ state: "detached" });
  assert.equal(await bobChat.locator("[data-flag]").count(), 0, "neither pinned nor muted");
});

test("message requests: delete hides one until its sender writes again; block ends it", async () => {
  const { alice } = pages;
  const erin = await openDevice(browser, server.url, DESKTOP);
  await signUp(erin, "erin");
  await erin.getByRole("button", { name: "New chat" }).click();
  await erin.getByLabel("Username").fill("alice");
  await erin.getByRole("button", { name: "Start chat" }).click();
  await erin.locator("#chat-title", { hasText: "alice" }).waitFor();
  await send(erin, "buy my stuff");
  const requests = alice.locator("[data-testid=requests]");
  await requests.waitFor();
  await requests.click();
  await alice.locator(".chat", { hasText: "erin" }).click();
  await alice.getByRole("button", { name: "Delete", exact: true }).click();
  // Gone from the requests (the list goes back to the chats) and not among the chats either.
  await alice.locator(".chat", { hasText: "erin" }).waitFor({ state: "detached" });
  await alice.locator("#toast", { hasText: "Request deleted" }).waitFor();
  assert.equal(await requests.count(), 0, "no requests left");
  assert.equal(await alice.locator(".chat", { hasText: "erin" }).count(), 0, "gone from the list");
  // Erin writes again: the request is back, with only the new message.
  await send(erin, "really, buy it");
  await requests.click();
  await alice.locator(".chat", { hasText: "erin" }).click();
  await message(alice, "really, buy it").waitFor();
  assert.equal(await message(alice, "buy my stuff").count(), 0, "the deleted history stays deleted");
  await alice.getByRole("button", { name: "Block" }).click();
  await alice.locator("#toast", { hasText: "Blocked" }).waitFor();
  await alice.locator(".chat", { hasText: "erin" }).waitFor({ state: "detached" });
  // Blocked: erin's next message is refused by the server and never reaches alice.
  await erin.getByLabel("Message", { exact: true }).fill("are you there?");
  await erin.getByLabel("Message", { exact: true }).press("Enter");
  await erin.locator("#toast.error").waitFor();
  assert.equal(await requests.count(), 0);
  await erin.context().close();
});

test("mention picker, link preview by the sender, star, forward and delete for me from the message menu", async () => {
  const { alice, bob } = pages;
  // A web page on loopback that allows other origins to read it (CORS), as a site must for a
  // browser-made preview; it counts who fetched it.
  let fetched = 0;
  const site = createServer((_, res) => {
    fetched += 1;
    res.writeHead(200, { "content-type": "text/html; charset=utf-8", "access-control-allow-origin": "*" });
    res.end(`<html><head><title>Fallback</title><meta property="og:title" content="Harbour walk">
      <meta property="og:description" content="Two hours along the old docks"></head><body>walk</body></html>`);
  });
  await new Promise((resolve) => site.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${site.address().port}/walk`;
  try {
    // Alice looks at another chat, so the group's mention shows in her list.
    await openChatNamed(alice, "bob");
    await openChatNamed(bob, "Road trip");
    const input = bob.getByLabel("Message", { exact: true });
    await input.fill("");
    await input.pressSequentially("see you @al");
    const picker = bob.getByRole("listbox", { name: "Mention someone" });
    await picker.waitFor();
    assert.deepEqual(await picker.getByRole("option").allTextContents(), ["@alice"], "members whose name starts so");
    await screenshot(bob, "desktop-mention-picker");
    await input.press("Enter");
    assert.equal(await input.inputValue(), "see you @alice ", "Enter picks the member");
    await input.pressSequentially(`at ${url}`);
    await input.press("Enter");
    await message(bob, "see you @alice").waitFor();

    const tripRow = alice.locator(".chat").filter({ has: alice.locator(".title", { hasText: /^Road trip/ }) });
    await tripRow.locator("[data-testid=mention]").waitFor();
    await openChatNamed(alice, "Road trip");
    const mentioned = message(alice, "see you @alice");
    await mentioned.locator(".mention", { hasText: "@alice" }).waitFor();
    assert.ok(await mentioned.evaluate((el) => el.classList.contains("mentions-me")), "marked as mentioning me");
    const card = mentioned.locator(".link-preview");
    await card.locator("strong", { hasText: "Harbour walk" }).waitFor();
    assert.equal((await card.locator(".description").textContent()).trim(), "Two hours along the old docks");
    assert.equal(await card.getAttribute("href"), url);
    assert.equal(fetched, 1, "only the sender's browser fetched the page; the server and the receivers did not");
    await screenshot(alice, "desktop-mention-and-link-preview");

    // Star it from the menu of a right click; the starred list leads back to it.
    await mentioned.click({ button: "right" });
    await alice.getByRole("menuitem", { name: "Star" }).click();
    await mentioned.locator(".star").waitFor();
    await openChatNamed(alice, "bob");
    await alice.getByRole("button", { name: "Starred messages" }).click();
    const starred = alice.locator(".starred-list button", { hasText: "see you @alice" });
    await starred.waitFor();
    await screenshot(alice, "desktop-starred");
    await starred.click();
    await alice.locator("#chat-title", { hasText: "Road trip" }).waitFor();
    await mentioned.locator(".star").waitFor();

    // Forward it to bob's direct chat from the "More" button.
    await mentioned.hover();
    await mentioned.getByRole("button", { name: "More actions" }).click();
    await alice.getByRole("menuitem", { name: "Forward" }).click();
    await alice.getByRole("dialog").getByRole("button", { name: "bob", exact: true }).click();
    await alice.locator("#toast", { hasText: "Forwarded to bob" }).waitFor();
    await openChatNamed(bob, "alice");
    const forwarded = message(bob, "see you @alice");
    await forwarded.locator(".forwarded", { hasText: "Forwarded" }).waitFor();
    assert.equal(await forwarded.locator(".mention").count(), 0, "a forward does not carry the mentions along");

    // Delete for me with a long press (touch): gone here, also after a reload; bob keeps it.
    await openChatNamed(alice, "Road trip");
    const box = await mentioned.locator(".text").boundingBox();
    await mentioned.dispatchEvent("pointerdown", { pointerType: "touch", clientX: box.x + 5, clientY: box.y + 5 });
    await alice.getByRole("menuitem", { name: "Delete for me" }).click();
    await mentioned.waitFor({ state: "detached" });
    await openChatNamed(bob, "Road trip");
    await message(bob, "see you @alice").waitFor();
    await alice.reload();
    await waitOnline(alice);
    await openChatNamed(alice, "Road trip");
    await message(alice, "carol here").waitFor();
    assert.equal(await message(alice, "see you @alice").count(), 0, "deleted for me stays deleted");
    assert.deepEqual(JSON.parse(await alice.evaluate(() => window.anytime.starred())).map((s) => s.text), [],
      "and is no longer starred");
    // The history is stored in chunks (tl:<chat>, tl:<chat>:<n>), none in the old one-blob layout.
    const keys = await alice.evaluate(() => new Promise((resolve, reject) => {
      const open = indexedDB.open("anytime");
      open.onsuccess = () => {
        const all = open.result.transaction("kv").objectStore("kv").getAllKeys();
        all.onsuccess = () => { resolve(all.result); open.result.close(); };
        all.onerror = () => reject(all.error);
      };
      open.onerror = () => reject(open.error);
    }));
    assert.ok(keys.some((k) => /^tl:\d+:0$/.test(k)) && keys.some((k) => /^tl:\d+$/.test(k)), `keys: ${keys}`);
    assert.ok(!keys.some((k) => k.startsWith("conv:")), `keys: ${keys}`);
  } finally {
    site.close();
  }
});

test("wallet: sandbox top-up, PIN, money sent in a chat arrives and is confirmed by the receiver's wallet", async () => {
  const { alice, bob } = pages;
  await alice.getByRole("button", { name: "Wallet" }).click();
  const wallet = alice.getByRole("dialog");
  await wallet.locator(".sandbox", { hasText: "Sandbox" }).waitFor();
  await wallet.getByLabel("Payment PIN (4–8 digits)").fill("2468");
  await wallet.getByRole("button", { name: "Set PIN" }).click();
  await alice.locator("#toast", { hasText: "Payment PIN saved" }).waitFor();
  const reopened = alice.getByRole("dialog");
  await reopened.getByLabel("Amount", { exact: true }).fill("55");
  await reopened.getByRole("button", { name: "Top up" }).click();
  await alice.locator("#toast", { hasText: "Topped up 55.00 USD" }).waitFor();
  // Money out: a payout to a sandbox card, held and then captured.
  await alice.getByRole("dialog").getByLabel("Amount to pay out").fill("5");
  await alice.getByRole("dialog").getByLabel("PIN for the payout").fill("2468");
  await alice.getByRole("dialog").getByRole("button", { name: "Pay out" }).click();
  await alice.locator("#toast", { hasText: "Paid out 5.00 USD" }).waitFor();
  const balances = alice.getByRole("dialog").getByRole("list", { name: "Balances" });
  await balances.locator("li[data-currency=USD]", { hasText: "50.00 USD" }).waitFor();
  const history = alice.getByRole("dialog").getByRole("list", { name: "Wallet history" });
  await history.locator("li", { hasText: "+55.00 USD" }).waitFor();
  await history.locator("li", { hasText: "Payout (paid)" }).locator("strong", { hasText: "−5.00 USD" }).waitFor();
  await screenshot(alice, "desktop-wallet");
  await alice.getByRole("dialog").getByRole("button", { name: "Close" }).click();

  await openChatNamed(alice, "bob");
  await alice.getByRole("button", { name: "Money", exact: true }).click();
  await alice.getByRole("dialog").getByRole("button", { name: "💸 Send money" }).click();
  const pay = alice.getByRole("dialog");
  await pay.getByLabel("Amount").fill("12.50");
  await pay.getByLabel("Note (only this chat can read it)").fill("for the tickets");
  await pay.getByLabel("Payment PIN").fill("2468");
  await pay.getByRole("button", { name: "Send", exact: true }).click();
  await alice.locator("#toast", { hasText: "Sent 12.50 USD" }).waitFor();
  const sent = alice.locator(".message", { has: alice.locator(".payment-amount", { hasText: "12.50 USD" }) });
  await sent.locator(".text", { hasText: "for the tickets" }).waitFor();

  await openChatNamed(bob, "alice");
  const received = bob.locator(".message", { has: bob.locator(".payment-amount", { hasText: "12.50 USD" }) });
  await received.locator(".payment-parties", { hasText: "alice sent you" }).waitFor();
  await received.locator(".text", { hasText: "for the tickets" }).waitFor();
  await received.locator("[data-check=confirmed]").waitFor();
  await screenshot(bob, "phone-payment-message");
  await bob.getByRole("button", { name: "Back to chats" }).click();
  await bob.getByRole("button", { name: "Wallet" }).click();
  await bob.getByRole("dialog").getByRole("list", { name: "Balances" }).locator("li[data-currency=USD]", { hasText: "12.50 USD" }).waitFor();
  await bob.getByRole("dialog").getByRole("button", { name: "Close" }).click();
  // The note never reached the server: its database holds no trace of it.
  assert.equal(server.databaseContains("for the tickets"), false, "the note is end-to-end encrypted");
});

test("wallet in a group: a split bill of three is settled, a red envelope is grabbed", async () => {
  const { alice, bob, carol } = pages;
  for (const [page, pin] of [[bob, "1111"], [carol, "1357"]]) {
    const back = page.getByRole("button", { name: "Back to chats" });
    if (await back.isVisible()) await back.click();
    await page.getByRole("button", { name: "Wallet" }).click();
    await page.getByRole("dialog").getByLabel("Payment PIN (4–8 digits)").fill(pin);
    await page.getByRole("dialog").getByRole("button", { name: "Set PIN" }).click();
    await page.locator("#toast", { hasText: "Payment PIN saved" }).waitFor();
    await page.getByRole("dialog").getByLabel("Amount", { exact: true }).fill("20");
    await page.getByRole("dialog").getByRole("button", { name: "Top up" }).click();
    await page.locator("#toast", { hasText: "Topped up 20.00 USD" }).waitFor();
    await page.getByRole("dialog").getByRole("button", { name: "Close" }).click();
  }

  // Alice splits thirty dollars among the three of them.
  await openChatNamed(alice, "Road trip");
  await alice.getByRole("button", { name: "Money", exact: true }).click();
  await alice.getByRole("dialog").getByRole("button", { name: "🧾 Split a bill" }).click();
  const split = alice.getByRole("dialog");
  await split.getByLabel("Total").fill("30");
  await split.getByLabel("What for (only this chat can read it)").fill("dinner");
  await split.getByRole("button", { name: "Split", exact: true }).click();
  await alice.locator("#toast", { hasText: "asked 20.00" }).waitFor();
  for (const [page, pin] of [[bob, "1111"], [carol, "1357"]]) {
    await openChatNamed(page, "Road trip");
    const bill = page.locator(".message .split-bill").last();
    await bill.getByRole("button", { name: "Pay my share (10.00 USD)" }).click();
    await page.getByRole("dialog").getByLabel("Payment PIN").fill(pin);
    await page.getByRole("dialog").getByRole("button", { name: "Pay", exact: true }).click();
    await bill.locator(".tracker li[data-status=paid]", { hasText: page === bob ? "bob" : "carol" }).waitFor();
  }
  const tracker = alice.locator(".message .split-bill").last();
  await tracker.locator(".tracker-total", { hasText: "20.00 of 20.00 USD paid" }).waitFor();
  assert.equal(await tracker.locator(".tracker li[data-status=paid]").count(), 2);
  await screenshot(alice, "desktop-split-bill-settled");

  // A custom split: bob is asked 4.00 and carol 2.50 of a 9.00 bill.
  await alice.getByRole("button", { name: "Money", exact: true }).click();
  await alice.getByRole("dialog").getByRole("button", { name: "🧾 Split a bill" }).click();
  const uneven = alice.getByRole("dialog");
  await uneven.getByLabel("Total").fill("9");
  await uneven.getByLabel("Custom amounts").check();
  await uneven.getByLabel("bob's share").fill("4");
  await uneven.getByLabel("carol's share").fill("2.50");
  await uneven.getByRole("button", { name: "Split", exact: true }).click();
  await alice.locator("#toast", { hasText: "asked 6.50" }).waitFor();
  await bob.locator(".message .split-bill").last().getByRole("button", { name: "Pay my share (4.00 USD)" }).waitFor();
  // bob pays it from his wallet screen, where what he is asked is listed.
  const back = bob.getByRole("button", { name: "Back to chats" });
  if (await back.isVisible()) await back.click();
  await bob.getByRole("button", { name: "Wallet" }).click();
  const asked = bob.getByRole("dialog").getByRole("list", { name: "Asked of you" }).locator("li", { hasText: "4.00 USD" });
  await asked.getByText("alice asks your share of a split bill").waitFor();
  await asked.getByRole("button", { name: "Pay" }).click();
  // The PIN is asked in a dialog over the wallet's.
  const pinDialog = bob.getByRole("dialog").last();
  await pinDialog.getByText("Pay 4.00 USD to alice").waitFor();
  await pinDialog.getByLabel("Payment PIN").fill("1111");
  await pinDialog.getByRole("button", { name: "Pay", exact: true }).click();
  await bob.locator("#toast", { hasText: "Paid 4.00 USD" }).waitFor();
  await bob.getByRole("dialog").getByRole("list", { name: "Asked of you" }).getByText("Nobody is asking you for money").waitFor();
  await bob.getByRole("dialog").getByRole("button", { name: "Close" }).click();
  await openChatNamed(bob, "Road trip");

  // A red envelope of two equal shares: bob opens it and gets half.
  await alice.getByRole("button", { name: "Money", exact: true }).click();
  await alice.getByRole("dialog").getByRole("button", { name: "🧧 Red envelope" }).click();
  const red = alice.getByRole("dialog");
  await red.getByLabel("Total").fill("6");
  await red.getByLabel("Shares").fill("2");
  await red.getByLabel("Amounts").selectOption("equal");
  await red.getByLabel("Payment PIN").fill("2468");
  await red.getByRole("button", { name: "Send envelope" }).click();
  await alice.locator("#toast", { hasText: "Red envelope of 6.00 USD sent" }).waitFor();
  const envelope = bob.locator(".message .red-envelope").last();
  await envelope.getByRole("button", { name: "Open" }).click();
  await bob.locator("#toast", { hasText: "You got 3.00 USD" }).waitFor();
  await envelope.locator(".grabbed", { hasText: "You got 3.00 USD" }).waitFor();
  await screenshot(bob, "phone-red-envelope-grabbed");
});

test("logging out wipes the browser's store", async () => {
  const { carol } = pages;
  await carol.getByRole("button", { name: "Settings" }).click();
  await screenshot(carol, "desktop-settings");
  await carol.getByRole("button", { name: "Log out" }).click();
  await carol.getByRole("button", { name: "Sign up" }).waitFor();
  const databases = await carol.evaluate(async () => (await indexedDB.databases()).map((d) => d.name));
  // The page reopened an empty store on reload; it holds no account and no chats.
  assert.equal(await carol.evaluate(() => window.anytime.account()), null);
  assert.ok(databases.length <= 1, `databases: ${databases}`);
});
