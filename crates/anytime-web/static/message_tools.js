// Per-message tools of the web UI: the action menu (the "More" button, a right click or a long
// press), forwarding, stars, delete for me, the starred list, the @mention picker of the
// composer, mentions in bubbles and link previews. A preview is made by this browser: it fetches
// the page itself (the server never fetches a URL), and the wasm core reads the title from it.

import { h, toast, call, time, dialog } from "/dom.js";

// Set once by app.js: { app, ui, openChat, startReply, startEdit, deleteMessage, queueRender, prefs }.
let ctx = null;
export function setup(context) { ctx = context; }

// How much of a page is read for its title: the wasm core reads no more either.
const PAGE_BYTES_MAX = 256 * 1024;
const LONG_PRESS_MS = 500;

// ---------------------------------------------------------------- action menu

export function closeMenu() {
  document.getElementById("message-menu")?.remove();
  document.removeEventListener("pointerdown", outsideMenu, true);
}

function outsideMenu(event) {
  if (!event.target.closest("#message-menu")) closeMenu();
}

export function openMenu(chat, e, anchor, at = null) {
  closeMenu();
  const items = [
    ["Reply", () => ctx.startReply(e)],
    ["Forward", () => forwardDialog(chat, e)],
    [e.starred ? "Unstar" : "Star", async () => {
      await call(ctx.app.star(chat.conv, e.msg_id, !e.starred));
      toast(e.starred ? "Star removed" : "Starred: find it under ★ Starred");
    }],
    navigator.clipboard ? ["Copy text", () => navigator.clipboard.writeText(e.text).then(() => toast("Copied"))] : null,
    e.own ? ["Edit", () => ctx.startEdit(e)] : null,
    e.own ? ["Delete for everyone", () => ctx.deleteMessage(chat.conv, e)] : null,
    ["Delete for me", () => deleteForMe(chat.conv, e)],
  ].filter(Boolean);
  const menu = h("div", { class: "menu", role: "menu", id: "message-menu", "aria-label": "Message actions", onkeydown: menuKey },
    items.map(([label, act]) => h("button", { type: "button", role: "menuitem", onclick: () => { closeMenu(); act(); } }, label)));
  document.body.append(menu);
  const box = anchor.getBoundingClientRect();
  const x = at ? at.x : box.left;
  const y = at ? at.y : box.bottom;
  menu.style.left = `${Math.max(4, Math.min(x, innerWidth - menu.offsetWidth - 4))}px`;
  menu.style.top = `${Math.max(4, Math.min(y, innerHeight - menu.offsetHeight - 4))}px`;
  menu.querySelector("button").focus();
  document.addEventListener("pointerdown", outsideMenu, true);
}

function menuKey(event) {
  const buttons = [...event.currentTarget.querySelectorAll("button")];
  const at = buttons.indexOf(document.activeElement);
  if (event.key === "Escape") { closeMenu(); event.preventDefault(); }
  else if (event.key === "ArrowDown") { buttons[(at + 1) % buttons.length].focus(); event.preventDefault(); }
  else if (event.key === "ArrowUp") { buttons[(at - 1 + buttons.length) % buttons.length].focus(); event.preventDefault(); }
}

// A right click, or a long press on a touch screen, opens the menu on a bubble.
export function menuGestures(li, chat, e) {
  li.addEventListener("contextmenu", (event) => {
    event.preventDefault();
    openMenu(chat, e, li, { x: event.clientX, y: event.clientY });
  });
  let timer = null;
  const cancel = () => { clearTimeout(timer); timer = null; };
  li.addEventListener("pointerdown", (event) => {
    if (event.pointerType !== "touch") return;
    cancel();
    const at = { x: event.clientX, y: event.clientY };
    timer = setTimeout(() => { timer = null; openMenu(chat, e, li, at); }, LONG_PRESS_MS);
  });
  for (const end of ["pointerup", "pointercancel", "pointermove", "pointerleave"]) li.addEventListener(end, cancel);
}

async function deleteForMe(conv, e) {
  if (!confirm("Delete this message from this browser? Others keep it.")) return;
  await call(ctx.app.deleteForMe(conv, e.msg_id));
  toast("Deleted for you");
}

function forwardDialog(chat, e) {
  const chats = JSON.parse(ctx.app.chats()).filter((c) => !c.request);
  const d = dialog("Forward to…", h("ul", { class: "members forward-list" }, chats.map((c) => h("li", {},
    h("button", { type: "button", class: "secondary", onclick: async () => {
      await call(ctx.app.forward(chat.conv, e.msg_id, c.conv));
      d.close();
      toast(`Forwarded to ${c.title}`);
    } }, c.title)))), null);
}

export async function starredDialog() {
  const starred = await call(ctx.app.starred());
  const d = dialog("Starred messages", starred.length
    ? h("ul", { class: "starred-list" }, starred.map((s) => h("li", {}, h("button", {
      type: "button", class: "chat result", "data-msg": s.msg_id,
      onclick: () => { d.close(); ctx.openChat(s.conv, s.msg_id); },
    }, h("span", { class: "title" }, s.title), h("span", { class: "time" }, time(s.at)),
    h("span", { class: "preview" }, `${s.sender}: ${s.text}`)))))
    : h("p", { class: "muted" }, "No starred messages. Star one from its menu (right click or long press)."), null);
}

// ---------------------------------------------------------------- mentions

// The bubble's text with the mentions it carries marked.
export function textWithMentions(e) {
  if (!e.mentions?.length) return e.text;
  const names = new Set(e.mentions.map((n) => n.toLowerCase()));
  const parts = [];
  let last = 0;
  for (const match of e.text.matchAll(/@([\w.-]+)/g)) {
    const name = match[1].replace(/[.]+$/, "");
    if (!names.has(name.toLowerCase())) continue;
    parts.push(e.text.slice(last, match.index), h("span", { class: "mention" }, `@${name}`));
    last = match.index + 1 + name.length;
  }
  parts.push(e.text.slice(last));
  return parts;
}

// The "@partial" being typed just before the caret, if any.
function mentionQuery(input) {
  const before = input.value.slice(0, input.selectionStart);
  const match = /(^|\s)@([\w.-]*)$/.exec(before);
  return match ? { query: match[2].toLowerCase(), start: before.length - match[2].length - 1 } : null;
}

export function closePicker() {
  document.getElementById("mention-picker")?.remove();
}

export function updatePicker(input) {
  const typed = mentionQuery(input);
  const members = (ctx.ui.members || []).filter((m) => !m.me && m.name.toLowerCase().startsWith(typed?.query ?? "\0"));
  if (!typed || !members.length) { closePicker(); return; }
  const selected = Math.min(Number(document.getElementById("mention-picker")?.dataset.selected || 0), members.length - 1);
  const picker = h("ul", { id: "mention-picker", class: "mention-picker", role: "listbox", "aria-label": "Mention someone", "data-selected": selected },
    members.slice(0, 8).map((m, i) => h("li", {
      role: "option", id: `mention-${i}`, "aria-selected": i === selected ? "true" : "false",
      onpointerdown: (event) => { event.preventDefault(); pick(input, m.name); },
    }, `@${m.name}`)));
  const old = document.getElementById("mention-picker");
  if (old) old.replaceWith(picker); else input.form.prepend(picker);
  input.setAttribute("aria-activedescendant", `mention-${selected}`);
}

function pick(input, name) {
  const typed = mentionQuery(input);
  if (!typed) return;
  const after = input.value.slice(input.selectionStart);
  input.value = `${input.value.slice(0, typed.start)}@${name} ${after}`;
  const caret = typed.start + name.length + 2;
  input.setSelectionRange(caret, caret);
  closePicker();
  input.removeAttribute("aria-activedescendant");
  input.focus();
}

// Keys while the picker is open; true when the key was the picker's.
export function pickerKey(event) {
  const picker = document.getElementById("mention-picker");
  if (!picker) return false;
  const options = [...picker.querySelectorAll("[role=option]")];
  let selected = Number(picker.dataset.selected || 0);
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    selected = (selected + (event.key === "ArrowDown" ? 1 : options.length - 1)) % options.length;
    picker.dataset.selected = selected;
    options.forEach((o, i) => o.setAttribute("aria-selected", i === selected ? "true" : "false"));
    event.target.setAttribute("aria-activedescendant", `mention-${selected}`);
  } else if (event.key === "Enter" || event.key === "Tab") {
    pick(event.target, options[selected].textContent.slice(1));
  } else if (event.key === "Escape") {
    closePicker();
  } else {
    return false;
  }
  event.preventDefault();
  return true;
}

// ---------------------------------------------------------------- link previews

export function previewCard(preview) {
  let host = preview.url;
  try { host = new URL(preview.url).host; } catch (_) { /* shown as it is */ }
  return h("a", { class: "link-preview", href: preview.url, target: "_blank", rel: "noopener noreferrer nofollow" },
    preview.title ? h("strong", {}, preview.title) : null,
    preview.description ? h("span", { class: "description" }, preview.description) : null,
    h("span", { class: "host muted" }, host));
}

// After an own message went out: fetch its first link's page and send the preview. Pages are
// only readable where the site allows other origins (CORS); elsewhere there is no preview.
export async function sendPreview(conv, msgId, text) {
  if (ctx.prefs.data.noPreviews) return;
  const url = ctx.app.linkIn(text);
  if (!url) return;
  let page;
  try {
    page = await fetchPage(url);
  } catch (error) {
    console.info(`no link preview for ${url}: ${error.message || error}`);
    return;
  }
  await ctx.app.preview(conv, msgId, url, page).catch((error) => console.info(`no link preview: ${error}`));
}

async function fetchPage(url) {
  const response = await fetch(url, {
    mode: "cors", credentials: "omit", referrerPolicy: "no-referrer", signal: AbortSignal.timeout(5000),
  });
  if (!response.ok) throw new Error(`the site answered ${response.status}`);
  if (!(response.headers.get("content-type") || "").includes("text/html")) throw new Error("not a web page");
  const reader = response.body.getReader();
  const chunks = [];
  let size = 0;
  while (size < PAGE_BYTES_MAX) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.length;
  }
  reader.cancel().catch(() => {});
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) { bytes.set(chunk, at); at += chunk.length; }
  return new TextDecoder().decode(bytes.subarray(0, PAGE_BYTES_MAX));
}
