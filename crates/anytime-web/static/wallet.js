// The wallet in the web UI: balances, payment PIN, sandbox top-ups, history with CSV export,
// and paying someone in a chat. Money moves on the server's ledger (HTTP/JSON, docs/protocol.md
// "Wallet"); the chat learns of it from a payment message the wasm core encrypts, so the note
// never reaches the server in plaintext.

import { h, toast, time, dialog, field } from "/dom.js";

// Set once by app.js: { app, account }.
let ctx = null;
export function setup(context) { ctx = context; }

const TEST_CARDS = [
  ["4242 4242 4242 4242", "succeeds"],
  ["4000 0000 0000 3220", "asks for a second step (code 123456)"],
  ["4000 0000 0000 0002", "is declined"],
];

// Payouts (money out) go to the same sandbox cards.
const PAYOUT_CARDS = [
  ["4242 4242 4242 4242", "is paid"],
  ["4000 0000 0000 0002", "is declined"],
  ["4000 0000 0000 0077", "never answers (the money stays held, then comes back)"],
];

const HOLD_TEXT = { held: "held", captured: "paid", released: "declined", expired: "expired, back" };

class WalletError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${ctx.app.sessionToken()}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch (_) { value = text; }
  if (!response.ok) throw new WalletError(value?.code || "error", value?.message || `HTTP ${response.status}`);
  return value;
}

const ADVICE = {
  insufficient_funds: "Not enough money: top up in Wallet.",
  pin_wrong: "Wrong payment PIN.",
  pin_locked: "Too many wrong PINs: payments are locked for 15 minutes.",
  limit_exceeded: "Over the per-payment or daily limit.",
};

function failed(error) {
  toast(ADVICE[error.code] || error.message || String(error), true);
}

function newKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

// ---------------------------------------------------------------- wallet screen

export async function walletDialog() {
  let summary;
  try { summary = await api("GET", "/v1/wallet"); } catch (error) { failed(error); return; }
  const currencies = summary.currencies;
  const options = (selected) => currencies.map((c) => h("option", { value: c, selected: c === selected }, c));
  const first = summary.balances[0]?.currency || "USD";
  const historyList = h("ul", { class: "wallet-history", "aria-label": "Wallet history" });
  const historyCurrency = h("select", { id: "history-currency", onchange: () => loadHistory() }, options(first));
  async function loadHistory() {
    const page = await api("GET", `/v1/wallet/history?currency=${historyCurrency.value}&limit=50`).catch((e) => { failed(e); return null; });
    if (!page) return;
    historyList.replaceChildren(...page.transfers.map((t) => h("li", { "data-transfer": t.id },
      h("span", {}, t.purpose === "top_up" ? "Top-up" : t.purpose === "payout" ? `Payout (${HOLD_TEXT[t.hold] || t.hold})`
        : t.direction === "out" ? `To ${ctx.name(t.counterparty)}` : `From ${ctx.name(t.counterparty)}`),
      h("span", { class: "time muted" }, `${new Date(t.at_ms).toLocaleDateString()} ${time(t.at_ms)}`),
      h("strong", { class: t.direction === "out" ? "out" : "in" }, `${t.direction === "out" ? "−" : "+"}${t.amount} ${t.currency}`))));
    if (!page.transfers.length) historyList.append(h("li", { class: "muted" }, "Nothing yet"));
  }
  // What others asked this account to pay (requests and split-bill shares), payable from here.
  const askedList = h("ul", { class: "wallet-asked", "aria-label": "Asked of you" });
  async function loadAsked() {
    const asked = await api("GET", "/v1/wallet/requests").catch((e) => { failed(e); return null; });
    if (!asked) return;
    askedList.replaceChildren(...asked.map((r) => h("li", { "data-request": r.id },
      h("span", {}, `${ctx.name(r.requester)} asks ${r.split ? "your share of a split bill" : "you"}: `),
      h("strong", {}, `${r.amount} ${r.currency}`),
      h("button", { type: "button", class: "secondary", onclick: async () => {
        const pin = await askPin(`Pay ${r.amount} ${r.currency} to ${ctx.name(r.requester)}`);
        if (pin === null) return;
        try {
          const paid = await api("POST", `/v1/wallet/requests/${r.id}/pay`, { pin });
          await ctx.app.sendPayment(r.conv, paid.transfer, r.requester, paid.amount, paid.currency, r.split ? "my share" : "");
          toast(`Paid ${paid.amount} ${paid.currency}`);
          d.close();
          walletDialog();
        } catch (error) { failed(error); }
      } }, "Pay"),
      h("button", { type: "button", class: "secondary", onclick: async () => {
        try {
          await api("POST", `/v1/wallet/requests/${r.id}/close`);
          loadAsked();
        } catch (error) { failed(error); }
      } }, "Decline"))));
    if (!asked.length) askedList.append(h("li", { class: "muted" }, "Nobody is asking you for money"));
  }
  const exportCsv = async () => {
    const response = await fetch(`/v1/wallet/history?currency=${historyCurrency.value}&limit=200&format=csv`,
      { headers: { authorization: `Bearer ${ctx.app.sessionToken()}` } });
    if (!response.ok) { toast("Export failed", true); return; }
    const url = URL.createObjectURL(await response.blob());
    const link = h("a", { href: url, download: `anytime-wallet-${historyCurrency.value}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  };
  const topUpForm = h("form", { class: "row", "aria-label": "Top up", onsubmit: async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const body = { key: newKey(), currency: form.currency.value, amount: form.amount.value.trim(), card: form.card.value };
    try {
      let result = await api("POST", "/v1/wallet/top-up", body);
      if (result.status === "confirmation_required") {
        const code = prompt("Sandbox second step: enter the code (the sandbox accepts 123456)");
        if (code === null) return;
        result = await api("POST", "/v1/wallet/top-up/confirm", { challenge: result.challenge, code });
      }
      if (result.status !== "succeeded") { toast("The sandbox declined the card", true); return; }
      toast(`Topped up ${result.transfer.amount} ${result.transfer.currency}`);
      d.close();
      walletDialog();
    } catch (error) { failed(error); }
  } },
  field("Amount", { id: "top-up-amount", name: "amount", inputmode: "decimal", required: true, autocomplete: "off" }),
  h("div", { class: "field" }, h("label", { for: "top-up-currency" }, "Currency"), h("select", { id: "top-up-currency", name: "currency" }, options(first))),
  field("Test card number", { id: "top-up-card", name: "card", value: TEST_CARDS[0][0], autocomplete: "off" }),
  h("button", { type: "submit" }, "Top up"));
  const payoutForm = h("form", { class: "row", "aria-label": "Pay out", onsubmit: async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const body = { key: newKey(), currency: form.currency.value, amount: form.amount.value.trim(), card: form.card.value, pin: form.pin.value };
    try {
      const result = await api("POST", "/v1/wallet/payouts", body);
      const money = `${result.transfer.amount} ${result.transfer.currency}`;
      if (result.status === "paid") toast(`Paid out ${money}`);
      else if (result.status === "pending") toast(`Waiting for the provider: ${money} held until it answers`);
      else { toast(`The sandbox declined the payout: ${money} back in the wallet`, true); }
      d.close();
      walletDialog();
    } catch (error) { failed(error); }
  } },
  field("Amount to pay out", { id: "payout-amount", name: "amount", inputmode: "decimal", required: true, autocomplete: "off" }),
  h("div", { class: "field" }, h("label", { for: "payout-currency" }, "Currency to pay out"), h("select", { id: "payout-currency", name: "currency" }, options(first))),
  field("Test card to pay out to", { id: "payout-card", name: "card", value: TEST_CARDS[0][0], autocomplete: "off" }),
  field("PIN for the payout", { id: "payout-pin", name: "pin", type: "password", inputmode: "numeric", required: true, autocomplete: "off" }),
  h("button", { type: "submit" }, "Pay out"));
  const pinForm = h("form", { class: "row", "aria-label": "Payment PIN", onsubmit: async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    try {
      await api("POST", "/v1/wallet/pin", { pin: form.pin.value, current_pin: form.current?.value || null });
      toast("Payment PIN saved");
      d.close();
      walletDialog();
    } catch (error) { failed(error); }
  } },
  summary.pin_set ? field("Current PIN", { id: "current-pin", name: "current", type: "password", inputmode: "numeric", autocomplete: "off" }) : null,
  field(summary.pin_set ? "New PIN (4–8 digits)" : "Payment PIN (4–8 digits)", { id: "new-pin", name: "pin", type: "password", inputmode: "numeric", pattern: "[0-9]{4,8}", required: true, autocomplete: "off" }),
  h("button", { type: "submit" }, summary.pin_set ? "Change PIN" : "Set PIN"));
  const d = dialog("Wallet", [
    h("p", { class: "sandbox", role: "note" }, "Sandbox: test cards only, no real money moves."),
    h("ul", { class: "balances", "aria-label": "Balances" }, summary.balances.length
      ? summary.balances.map((b) => h("li", { "data-currency": b.currency },
        h("strong", { class: "amount" }, `${b.balance} ${b.currency}`),
        b.available !== b.balance ? h("span", { class: "muted" }, ` (${b.available} available)`) : null))
      : h("li", { class: "muted" }, "No money yet: top up below.")),
    h("h3", {}, "Asked of you"),
    askedList,
    h("h3", {}, "Top up"),
    h("p", { class: "muted small" }, TEST_CARDS.map(([card, what]) => `${card} ${what}`).join(" · ")),
    topUpForm,
    ...(summary.pin_set && summary.balances.length ? [
      h("h3", {}, "Pay out"),
      h("p", { class: "muted small" }, PAYOUT_CARDS.map(([card, what]) => `${card} ${what}`).join(" · ")),
      payoutForm] : []),
    h("h3", {}, "Payment PIN"),
    h("p", { class: "muted small" }, summary.pin_set ? "Asked before money leaves your wallet." : "Set one to send money."),
    pinForm,
    h("h3", {}, "History"),
    h("div", { class: "row" }, h("div", { class: "field" }, h("label", { for: "history-currency" }, "Currency"), historyCurrency),
      h("button", { type: "button", class: "secondary", onclick: exportCsv }, "Export CSV")),
    historyList,
    h("p", { class: "muted small" }, `Limits: ${summary.transfer_units_max.toLocaleString()} per payment, ${summary.daily_units_max.toLocaleString()} per day (in units of the currency).`),
  ], null);
  d.classList.add("wallet");
  loadAsked();
  loadHistory();
}

// ---------------------------------------------------------------- paying in a chat

// The chat's money menu: send, request, and in groups split a bill or hand out a red envelope.
export function moneyMenu(chat) {
  const group = chat.kind === "group";
  const choose = (open) => () => { d.close(); open(chat); };
  const d = dialog("Money", h("div", { class: "money-menu" },
    h("button", { type: "button", onclick: choose(payDialog) }, "💸 Send money"),
    h("button", { type: "button", onclick: choose(requestDialog) }, "🙏 Request money"),
    group ? h("button", { type: "button", onclick: choose(splitDialog) }, "🧾 Split a bill") : null,
    group ? h("button", { type: "button", onclick: choose(envelopeDialog) }, "🧧 Red envelope") : null), null);
}

async function summaryOrFail() {
  try { return await api("GET", "/v1/wallet"); } catch (error) { failed(error); return null; }
}

function currencyField(summary, id) {
  const first = summary.balances[0]?.currency || "USD";
  return h("div", { class: "field" }, h("label", { for: id }, "Currency"),
    h("select", { id }, summary.currencies.map((c) => h("option", { value: c, selected: c === first }, c))));
}

async function requestDialog(chat) {
  const others = chat.members.filter((m) => !m.me);
  const summary = await summaryOrFail();
  if (!summary) return;
  const d = dialog("Request money", [
    h("div", { class: "field" }, h("label", { for: "request-from" }, "From"),
      h("select", { id: "request-from" }, others.map((m) => h("option", { value: m.user }, m.name)))),
    h("div", { class: "row" }, field("Amount", { id: "request-amount", inputmode: "decimal", required: true, autocomplete: "off" }),
      currencyField(summary, "request-currency")),
    field("What for (only this chat can read it)", { id: "request-note", autocomplete: "off", maxlength: 200 }),
  ], h("button", { type: "submit", value: "ok", onclick: async (ev) => {
    ev.preventDefault();
    const payer = d.querySelector("#request-from").value;
    const amount = d.querySelector("#request-amount").value.trim();
    const currency = d.querySelector("#request-currency").value;
    if (!amount) return;
    try {
      const made = await api("POST", "/v1/wallet/requests", { key: newKey(), conv: chat.conv, payer, currency, amount });
      await ctx.app.sendMoneyMessage(chat.conv, "request", made.id, payer, made.amount, made.currency, 0, d.querySelector("#request-note").value.trim());
      d.close();
      toast(`Asked for ${made.amount} ${made.currency}`);
    } catch (error) { failed(error); }
  } }, "Request"));
}

async function splitDialog(chat) {
  const summary = await summaryOrFail();
  if (!summary) return;
  // Equal shares among the ticked people, or (custom) an amount typed for each other member.
  const amounts = chat.members.filter((m) => !m.me).map((m) => h("input", {
    type: "text", class: "share-amount", "data-user": m.user, inputmode: "decimal", autocomplete: "off",
    "aria-label": `${m.name}'s share`, placeholder: "0.00", hidden: true,
  }));
  const amountOf = (user) => amounts.find((a) => a.dataset.user === user);
  const people = chat.members.map((m) => h("label", { class: "radio" },
    h("input", { type: "checkbox", name: "split-person", value: m.user, checked: true }), m.me ? `${m.name} (you)` : m.name,
    m.me ? null : amountOf(m.user)));
  const legend = h("legend", {}, "Shared equally by");
  const custom = h("input", { type: "checkbox", id: "split-custom", onchange: () => {
    for (const a of amounts) a.hidden = !custom.checked;
    legend.textContent = custom.checked ? "Each one's share (yours is not asked)" : "Shared equally by";
  } });
  const d = dialog("Split a bill", [
    h("div", { class: "row" }, field("Total", { id: "split-total", inputmode: "decimal", required: true, autocomplete: "off" }),
      currencyField(summary, "split-currency")),
    h("label", { class: "radio" }, custom, "Custom amounts"),
    h("fieldset", {}, legend, people),
    field("What for (only this chat can read it)", { id: "split-note", autocomplete: "off", maxlength: 200 }),
  ], h("button", { type: "submit", value: "ok", onclick: async (ev) => {
    ev.preventDefault();
    const total = d.querySelector("#split-total").value.trim();
    const currency = d.querySelector("#split-currency").value;
    const chosen = [...d.querySelectorAll("input[name=split-person]:checked")].map((i) => i.value);
    const shares = custom.checked
      ? amounts.filter((a) => chosen.includes(a.dataset.user) && a.value.trim()).map((a) => ({ user: a.dataset.user, amount: a.value.trim() }))
      : [];
    if (!total || !chosen.length || (custom.checked && !shares.length)) return;
    const body = custom.checked
      ? { key: newKey(), conv: chat.conv, currency, shares }
      : { key: newKey(), conv: chat.conv, currency, total, people: chosen };
    try {
      const split = await api("POST", "/v1/wallet/splits", body);
      await ctx.app.sendMoneyMessage(chat.conv, "split", split.id, undefined, total, currency, 0, d.querySelector("#split-note").value.trim());
      d.close();
      toast(`Split ${total} ${currency}: asked ${split.asked}`);
    } catch (error) { failed(error); }
  } }, "Split"));
}

async function envelopeDialog(chat) {
  const summary = await summaryOrFail();
  if (!summary) return;
  if (!summary.pin_set) { toast("Set a payment PIN in Wallet first", true); walletDialog(); return; }
  const d = dialog("Red envelope", [
    h("p", { class: "muted small" }, "Members grab shares, first come first served; what nobody grabs in 24 hours comes back."),
    h("div", { class: "row" }, field("Total", { id: "envelope-total", inputmode: "decimal", required: true, autocomplete: "off" }),
      currencyField(summary, "envelope-currency"),
      field("Shares", { id: "envelope-shares", type: "number", min: 1, max: 200, value: Math.max(1, chat.members.length - 1), required: true })),
    h("div", { class: "field" }, h("label", { for: "envelope-split" }, "Amounts"),
      h("select", { id: "envelope-split" }, h("option", { value: "random" }, "Random (lucky draw)"), h("option", { value: "equal" }, "Equal"))),
    field("Wishes (only this chat can read them)", { id: "envelope-note", autocomplete: "off", maxlength: 200, value: "Best wishes!" }),
    field("Payment PIN", { id: "envelope-pin", type: "password", inputmode: "numeric", required: true, autocomplete: "off" }),
  ], h("button", { type: "submit", value: "ok", onclick: async (ev) => {
    ev.preventDefault();
    const body = {
      key: newKey(), conv: chat.conv, currency: d.querySelector("#envelope-currency").value,
      total: d.querySelector("#envelope-total").value.trim(), shares: Number(d.querySelector("#envelope-shares").value),
      split: d.querySelector("#envelope-split").value, pin: d.querySelector("#envelope-pin").value,
    };
    if (!body.total || !body.pin) return;
    try {
      const made = await api("POST", "/v1/wallet/envelopes", body);
      await ctx.app.sendMoneyMessage(chat.conv, "envelope", made.id, undefined, made.total, made.currency, made.shares, d.querySelector("#envelope-note").value.trim());
      d.close();
      toast(`Red envelope of ${made.total} ${made.currency} sent`);
    } catch (error) { failed(error); }
  } }, "Send envelope"));
}

// A PIN, asked for one action; resolves to null when cancelled.
function askPin(title) {
  return new Promise((resolve) => {
    let answered = false;
    const d = dialog(title, field("Payment PIN", { id: "ask-pin", type: "password", inputmode: "numeric", autocomplete: "off" }),
      h("button", { type: "submit", value: "ok", onclick: (ev) => {
        ev.preventDefault();
        answered = true;
        resolve(d.querySelector("#ask-pin").value);
        d.close();
      } }, "Pay"));
    d.addEventListener("close", () => { if (!answered) resolve(null); });
  });
}

export async function payDialog(chat) {
  const others = chat.members.filter((m) => !m.me);
  if (!others.length) { toast("Nobody to pay in this chat", true); return; }
  let summary;
  try { summary = await api("GET", "/v1/wallet"); } catch (error) { failed(error); return; }
  if (!summary.pin_set) { toast("Set a payment PIN in Wallet first", true); walletDialog(); return; }
  const first = summary.balances[0]?.currency || "USD";
  const d = dialog(chat.kind === "direct" ? `Send money to ${chat.title}` : "Send money", [
    h("p", { class: "sandbox", role: "note" }, "Sandbox money."),
    chat.kind === "group" ? h("div", { class: "field" }, h("label", { for: "pay-to" }, "To"),
      h("select", { id: "pay-to" }, others.map((m) => h("option", { value: m.user }, m.name)))) : null,
    h("div", { class: "row" },
      field("Amount", { id: "pay-amount", inputmode: "decimal", required: true, autocomplete: "off" }),
      h("div", { class: "field" }, h("label", { for: "pay-currency" }, "Currency"),
        h("select", { id: "pay-currency" }, summary.currencies.map((c) => h("option", { value: c, selected: c === first }, c))))),
    field("Note (only this chat can read it)", { id: "pay-note", autocomplete: "off", maxlength: 200 }),
    field("Payment PIN", { id: "pay-pin", type: "password", inputmode: "numeric", required: true, autocomplete: "off" }),
  ], h("button", { type: "submit", value: "ok", onclick: async (ev) => {
    ev.preventDefault();
    const to = chat.kind === "group" ? d.querySelector("#pay-to").value : others[0].user;
    const amount = d.querySelector("#pay-amount").value.trim();
    const currency = d.querySelector("#pay-currency").value;
    const note = d.querySelector("#pay-note").value.trim();
    const pin = d.querySelector("#pay-pin").value;
    if (!amount || !pin) return;
    const button = ev.currentTarget;
    button.disabled = true;
    const key = newKey();
    try {
      // A lost answer is retried with the same key: the server pays once.
      let transfer;
      for (let attempt = 0; ; attempt++) {
        try {
          transfer = await api("POST", "/v1/wallet/pay", { key, to, currency, amount, pin });
          break;
        } catch (error) {
          if (error instanceof WalletError || attempt >= 2) throw error;
        }
      }
      await ctx.app.sendPayment(chat.conv, transfer.id, to, transfer.amount, transfer.currency, note);
      d.close();
      toast(`Sent ${transfer.amount} ${transfer.currency}`);
    } catch (error) {
      failed(error);
      button.disabled = false;
    }
  } }, "Send"));
}

// ---------------------------------------------------------------- payment bubbles

// transfer id → "confirmed" | "unconfirmed", for payments to this account; `checks` counts the
// answers, so the timeline re-renders when one comes in.
const checked = new Map();
let checks = 0;
export function paymentChecks() { return checks; }

// id → { at, value } of requests, splits and envelopes fetched from the wallet.
const states = new Map();

// Others act on these through the server (paying, grabbing), not always with a chat message:
// while one is unsettled and on screen, it is read again every few seconds.
const REFRESH_MS = 2_000;
function unsettled(value) {
  if (!value) return false;
  if (value.requests) return value.requests.some((r) => r.status === "open");
  if (value.grabs) return value.status === "open" && value.grabs.length < value.shares;
  return value.status === "open";
}

function refresh(path, id, queueRender, force = false) {
  const known = states.get(id);
  if (!force && known && (known.loading || Date.now() - known.at < REFRESH_MS)) return known.value;
  states.set(id, { at: Date.now(), value: known?.value, loading: true });
  api("GET", path)
    .then((value) => {
      states.set(id, { at: Date.now(), value });
      if (unsettled(value)) setTimeout(() => { checks += 1; queueRender(); }, REFRESH_MS + 100);
    })
    .catch(() => states.set(id, { at: Date.now(), value: known?.value ?? null }))
    .finally(() => { checks += 1; queueRender(); });
  return known?.value;
}

function personName(user, chat) {
  return chat.members.find((m) => m.user === user)?.name || ctx.name(user);
}

function moneyBody(chat, e, queueRender) {
  const p = e.payment;
  const who = e.own ? "You" : e.sender;
  const me = chat.members.find((m) => m.me)?.user;
  const act = (label, run) => h("button", { type: "button", class: "secondary", onclick: async () => {
    try { await run(); } catch (error) { failed(error); }
  } }, label);
  if (e.kind === "money_request") {
    const state = refresh(`/v1/wallet/requests/${p.transfer}`, p.transfer, queueRender);
    const mine = state && state.payer === me && state.status === "open";
    return h("div", { class: "money money-request", "data-id": p.transfer },
      h("span", { class: "payment-icon", "aria-hidden": "true" }, "🙏"),
      h("span", { class: "payment-parties" }, `${who} asked ${p.to_me ? "you" : p.to} for `),
      h("strong", { class: "payment-amount" }, `${p.amount} ${p.currency}`),
      state ? h("span", { class: "money-status", "data-status": state.status }, ` · ${state.status}`) : null,
      mine ? h("span", { class: "row" },
        act("Pay", async () => {
          const pin = await askPin(`Pay ${p.amount} ${p.currency}`);
          if (pin === null) return;
          const paid = await api("POST", `/v1/wallet/requests/${p.transfer}/pay`, { pin });
          await ctx.app.sendPayment(chat.conv, paid.transfer, state.requester, paid.amount, paid.currency, "");
          refresh(`/v1/wallet/requests/${p.transfer}`, p.transfer, queueRender, true);
        }),
        act("Decline", async () => {
          await api("POST", `/v1/wallet/requests/${p.transfer}/close`);
          refresh(`/v1/wallet/requests/${p.transfer}`, p.transfer, queueRender, true);
        })) : null);
  }
  if (e.kind === "split_bill") {
    const state = refresh(`/v1/wallet/splits/${p.transfer}`, p.transfer, queueRender);
    const myShare = state?.requests.find((r) => r.payer === me && r.status === "open");
    return h("div", { class: "money split-bill", "data-id": p.transfer },
      h("div", {}, h("span", { class: "payment-icon", "aria-hidden": "true" }, "🧾 "),
        h("span", { class: "payment-parties" }, `${who} split `), h("strong", { class: "payment-amount" }, `${p.amount} ${p.currency}`)),
      state ? h("ul", { class: "tracker", "aria-label": "Who has paid" }, state.requests.map((r) => h("li", { "data-status": r.status },
        `${r.status === "paid" ? "✓" : r.status === "open" ? "…" : "✗"} ${personName(r.payer, chat)}: ${r.amount} ${r.currency} (${r.status})`))) : null,
      state ? h("p", { class: "muted small tracker-total" }, `${state.paid} of ${state.asked} ${state.currency} paid`) : null,
      myShare ? act(`Pay my share (${myShare.amount} ${myShare.currency})`, async () => {
        const pin = await askPin(`Pay ${myShare.amount} ${myShare.currency}`);
        if (pin === null) return;
        const paid = await api("POST", `/v1/wallet/requests/${myShare.id}/pay`, { pin });
        await ctx.app.sendPayment(chat.conv, paid.transfer, state.requester, paid.amount, paid.currency, "my share");
        refresh(`/v1/wallet/splits/${p.transfer}`, p.transfer, queueRender, true);
      }) : null);
  }
  // A red envelope.
  const state = refresh(`/v1/wallet/envelopes/${p.transfer}`, p.transfer, queueRender);
  const grabbed = state?.grabs.find((g) => g.user === me);
  const open = state && state.status === "open" && !grabbed && state.grabs.length < state.shares;
  return h("div", { class: "money red-envelope", "data-id": p.transfer },
    h("div", {}, h("span", { class: "payment-icon", "aria-hidden": "true" }, "🧧 "),
      h("span", { class: "payment-parties" }, `${who}: `), h("strong", { class: "payment-amount" }, `${p.amount} ${p.currency}`),
      h("span", { class: "muted" }, ` in ${p.shares} shares`)),
    grabbed ? h("p", { class: "grabbed" }, `You got ${grabbed.amount} ${state.currency}`) : null,
    state ? h("p", { class: "muted small" }, `${state.grabs.length} of ${state.shares} grabbed${state.status === "refunded" ? " · expired" : ""}`) : null,
    open ? act("Open", async () => {
      const result = await api("POST", `/v1/wallet/envelopes/${p.transfer}/grab`);
      toast(result.status === "grabbed" ? `You got ${result.amount} ${result.envelope.currency}` : "All shares were taken");
      refresh(`/v1/wallet/envelopes/${p.transfer}`, p.transfer, queueRender, true);
    }) : null);
}

export function paymentBody(e, queueRender, chat) {
  const p = e.payment;
  if (!p) return null;
  if (e.kind !== "payment") return moneyBody(chat, e, queueRender);
  const who = e.own ? "You" : e.sender;
  const whom = p.to_me ? "you" : p.to;
  const status = p.to_me ? checked.get(p.transfer) : null;
  if (p.to_me && status === undefined) {
    checked.set(p.transfer, "checking");
    api("GET", `/v1/wallet/transfers/${p.transfer}`)
      .then((t) => checked.set(p.transfer, t.direction === "in" && t.amount === p.amount && t.currency === p.currency ? "confirmed" : "unconfirmed"))
      .catch(() => checked.set(p.transfer, "unconfirmed"))
      .finally(() => { checks += 1; queueRender(); });
  }
  return h("div", { class: "money", "data-transfer": p.transfer },
    h("span", { class: "payment-icon", "aria-hidden": "true" }, "💸"),
    h("strong", { class: "payment-amount" }, `${p.amount} ${p.currency}`),
    h("span", { class: "payment-parties" }, ` ${who} sent ${whom}`),
    status === "confirmed" ? h("span", { class: "payment-check", "data-check": "confirmed" }, " ✓ in your wallet")
      : status === "unconfirmed" ? h("span", { class: "payment-check warning", "data-check": "unconfirmed" }, " ⚠ not found in your wallet") : null);
}
