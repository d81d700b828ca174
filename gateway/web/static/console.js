/* The parking gateway's console (docs/http.md, "The console").
 *
 * It reads the gateway's local API as whoever the browser is: an anonymous viewer where the
 * config allows one, or an account logged in with the session cookie (actions then carry the
 * session's CSRF token). The availability stream drives the page: each event redraws the
 * counts and fetches the bay grid again, so a bay's change shows as soon as the stream says
 * the lot changed. Technicians also see the lanes, plates, alarms and the backend link,
 * polled every few seconds, and today's charts. No framework, no build step, nothing from
 * outside this gateway; the DOM is written with textContent only.
 */
"use strict";

(() => {
  const REFRESH_BAYS_MS = 10000; // two bays of one kind swapping within 100 ms change no count
  const TECH_POLL_MS = 3000;
  const REPORT_POLL_MS = 60000;
  const ANNOUNCE_EVERY_MS = 10000; // the live region says the free count at most this often
  const RETRY_MS = 5000;
  const SVG = "http://www.w3.org/2000/svg";
  const STATES = {
    free: { symbol: "\u25CB", text: "free" },
    occupied: { symbol: "\u25CF", text: "occupied" },
    unknown: { symbol: "?", text: "unknown" },
    out: { symbol: "\u2715", text: "out of service" },
  };
  const METHODS = {
    sensed: "Every bay has a sensor.",
    counted: "No bay has a sensor: the lanes count the vehicles inside.",
    derived: "Bays with a sensor are sensed; the others are counted from the vehicles inside"
      + " (an estimate).",
  };

  const $ = (id) => document.getElementById(id);
  const session = { role: null, account: null, csrf: null };
  const timers = [];
  let stream = null;
  let retry = null;
  let baysLoading = false;
  let baysAgain = false;
  let gridShape = "";
  const cells = new Map(); // bayId -> its cell
  const countedRows = new Map(); // "floor/zone/type" -> its line
  const floorHeads = new Map(); // floor -> the span after its heading
  const laneCards = new Map(); // laneId -> {card, facts, plates}
  let alarmsShown = "";
  let alarmIds = null; // the active alarms' ids once seen: those added after are announced
  let lotTz; // the lot's time zone, once the day's report has said it
  let report = null; // the day's, drawn again when the page's width changes
  let freeSaid = null;
  let freeWaiting = null;
  let announcing = null;

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET" && session.csrf) headers["X-CSRF-Token"] = session.csrf;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, "network", "the gateway does not answer");
    }
    let answer = null;
    try {
      answer = await response.json();
    } catch (e) {
      answer = null;
    }
    if (!response.ok) {
      const error = (answer && answer.error) || {};
      throw new ApiError(response.status, error.code || "error",
        error.message || response.statusText);
    }
    return answer;
  }

  function make(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === true) node.setAttribute(name, "");
      else if (value !== false && value != null) node.setAttribute(name, value);
    }
    node.append(...children.filter((c) => c != null).map((c) => (
      typeof c === "object" ? c : String(c))));
    return node;
  }

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function notice(text) {
    $("notice").textContent = text || "";
  }

  function announce(text) {
    $("announce").textContent = text;
  }

  function time(iso) {
    if (!iso) return "-";
    return new Date(iso).toLocaleTimeString([], {
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZone: lotTz,
    });
  }

  function byName(a, b) {
    const x = Number(a);
    const y = Number(b);
    if (a !== "" && b !== "" && !Number.isNaN(x) && !Number.isNaN(y)) return x - y;
    return a.localeCompare(b);
  }

  function duration(seconds) {
    const s = Math.round(seconds);
    if (s < 120) return `${s} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  }

  function money(minor, currency) {
    if (!currency) return String(minor);
    const format = new Intl.NumberFormat(undefined, { style: "currency", currency });
    return format.format(minor / 10 ** format.resolvedOptions().maximumFractionDigits);
  }

  function setLink(kind, text) {
    const link = $("link");
    link.className = `link ${kind}`;
    link.textContent = text;
  }

  // --- who is looking ---------------------------------------------------------------------

  async function identify() {
    clearTimeout(retry);
    try {
      const who = await call("GET", "/api/v1/session");
      notice("");
      become(who.role, who.account, who.csrfToken || null);
    } catch (e) {
      if (e.status === 401) {
        become(null, null, null);
        return;
      }
      notice(`The gateway did not answer (${e.message}); trying again.`);
      setLink("down", "offline");
      retry = setTimeout(identify, RETRY_MS);
    }
  }

  function become(role, account, csrf) {
    Object.assign(session, { role, account, csrf });
    const technician = role === "technician";
    $("who").textContent = account ? `${account} (${role})` : (role ? "viewer" : "");
    $("logout").hidden = !account;
    $("login-open").hidden = Boolean(account) || !role;
    $("login").hidden = Boolean(role);
    $("login-cancel").hidden = true;
    $("summary").hidden = !role;
    $("grid").hidden = !role;
    for (const panel of document.querySelectorAll(".tech")) panel.hidden = !technician;
    while (timers.length) clearInterval(timers.pop());
    if (!technician) forgetTechnician();
    if (!role) { // logged out, and no anonymous viewer: nothing of the lot stays on the page
      closeStream();
      setLink("down", "not logged in");
      for (const id of ["figures", "floors", "method"]) $(id).replaceChildren();
      for (const id of ["by-floor", "by-zone", "by-type"]) $(id).replaceChildren($(id).caption);
      gridShape = "";
      return;
    }
    openStream();
    loadBays();
    timers.push(setInterval(loadBays, REFRESH_BAYS_MS));
    if (technician) {
      pollTechnician();
      loadReport();
      timers.push(setInterval(pollTechnician, TECH_POLL_MS));
      timers.push(setInterval(loadReport, REPORT_POLL_MS));
    }
  }

  function forgetTechnician() {
    // A viewer's page holds nothing of the technician's: no lane, button or plate left behind.
    for (const id of ["lane-list", "alarm-list", "sync-figures", "today-table",
      "chart-occupancy", "chart-revenue"]) $(id).replaceChildren();
    laneCards.clear();
    alarmsShown = "";
    alarmIds = null;
    report = null;
  }

  async function logIn(event) {
    event.preventDefault();
    const button = event.submitter || $("login-form").querySelector("button[type=submit]");
    $("login-error").textContent = "";
    button.disabled = true;
    try {
      const who = await call("POST", "/api/v1/login", {
        user: $("login-user").value.trim(), password: $("login-password").value,
      });
      $("login-password").value = "";
      become(who.role, who.account, who.csrfToken);
      announce(`Logged in as ${who.account}, ${who.role}.`);
      $("logout").focus();
    } catch (e) {
      $("login-error").textContent = e.status === 401 ? "Wrong account or password."
        : `Not logged in: ${e.message}`;
    } finally {
      button.disabled = false;
    }
  }

  async function logOut() {
    try {
      await call("POST", "/api/v1/logout");
    } finally {
      announce("Logged out.");
      await identify();
    }
  }

  function showLogin(show) {
    $("login").hidden = !show;
    $("login-cancel").hidden = !show;
    if (show) $("login-user").focus();
    else $("login-open").focus();
  }

  // --- availability -----------------------------------------------------------------------

  function openStream() {
    closeStream();
    setLink("", "connecting\u2026");
    const source = new EventSource("/api/v1/availability/stream");
    stream = source;
    source.addEventListener("open", () => setLink("live", "live"));
    source.addEventListener("availability", (event) => {
      showAvailability(JSON.parse(event.data));
      loadBays();
    });
    source.addEventListener("error", () => {
      if (source !== stream) return; // one closed since
      if (source.readyState === EventSource.CLOSED) { // refused: the browser will not retry
        setLink("down", "disconnected; retrying");
        closeStream();
        retry = setTimeout(identify, RETRY_MS);
      } else {
        setLink("down", "reconnecting\u2026");
      }
    });
  }

  function closeStream() {
    if (stream) stream.close();
    stream = null;
  }

  function showAvailability(doc) {
    const lot = doc.lot;
    $("lot-name").textContent = doc.lotId;
    document.title = `${doc.lotId}: ${lot.free} free`;
    const badge = $("lot-state");
    badge.textContent = `lot ${doc.lotState}`;
    badge.className = `badge ${doc.lotState}`;
    $("updated").textContent = `as of ${time(doc.recordDateTime)}`;
    const figures = [["free", "Free", lot.free], ["occupied", "Occupied", lot.occupied],
      ["unknown", "Unknown", lot.unknown], ["out", "Out of service", lot.outOfService],
      ["total", "Bays", lot.total], ["share", "Occupied", `${lot.percentage}%`]];
    $("figures").replaceChildren(...figures.map(([kind, label, value]) => make(
      "div", { class: kind }, make("dt", {}, label), make("dd", {}, value))));
    $("method").textContent = METHODS[doc.occupancyMethod] || "";
    countsTable($("by-floor"), "Floor", doc.floors);
    countsTable($("by-zone"), "Zone", doc.zones);
    countsTable($("by-type"), "Type", doc.bayTypes);
    for (const [floor, head] of floorHeads) {
      const counts = doc.floors[floor];
      head.textContent = counts ? `${counts.free} free of ${counts.total}` : "";
    }
    sayFree(`${lot.free} of ${lot.total} bays free.`);
  }

  function countsTable(table, label, groups) {
    const caption = table.caption;
    const head = make("thead", {}, make("tr", {}, ...[label, "free", "occupied", "unknown",
      "out of service", "total"].map((text) => make("th", { scope: "col" }, text))));
    const rows = Object.keys(groups).sort(byName).map((name) => {
      const c = groups[name];
      return make("tr", {}, make("th", { scope: "row" }, name), make("td", {}, c.free),
        make("td", {}, c.occupied), make("td", {}, c.unknown), make("td", {}, c.outOfService),
        make("td", {}, c.total));
    });
    table.replaceChildren(caption, head, make("tbody", {}, ...rows));
  }

  function sayFree(text) {
    // The first count is what the page shows on arrival; changes are said, a few at most.
    if (freeSaid === null) {
      freeSaid = text;
      return;
    }
    freeWaiting = text;
    if (announcing) return;
    if (freeWaiting !== freeSaid) {
      announce(freeWaiting);
      freeSaid = freeWaiting;
    }
    announcing = setTimeout(() => {
      announcing = null;
      if (freeWaiting !== freeSaid) sayFree(freeWaiting);
    }, ANNOUNCE_EVERY_MS);
  }

  // --- the bay grid ------------------------------------------------------------------------

  async function loadBays() {
    if (!session.role) return;
    if (baysLoading) {
      baysAgain = true;
      return;
    }
    baysLoading = true;
    try {
      do {
        baysAgain = false;
        showBays(await call("GET", "/api/v1/bays"));
      } while (baysAgain);
    } catch (e) {
      if (e.status === 401) identify();
    } finally {
      baysLoading = false;
    }
  }

  function showBays(doc) {
    const shape = doc.bays.map((b) => [b.bayId, b.floor, b.zone, b.type].join("/")).join()
      + "|" + doc.counted.map((c) => [c.floor, c.zone, c.type, c.total].join("/")).join();
    const fresh = shape !== gridShape;
    if (fresh) {
      buildGrid(doc);
      gridShape = shape;
    }
    for (const bay of doc.bays) showBay(cells.get(bay.bayId), bay, !fresh);
    const zones = new Map(); // the counted bays of each zone, their types together
    for (const group of doc.counted) {
      const key = `${group.floor}/${group.zone}`;
      const sum = zones.get(key) || { total: 0, occupied: 0 };
      zones.set(key, { total: sum.total + group.total, occupied: sum.occupied + group.occupied });
    }
    for (const [key, sum] of zones) {
      const line = countedRows.get(key);
      line.text.textContent = `${sum.total} bays without a sensor, about ${sum.occupied} taken`;
      line.meter.max = sum.total;
      line.meter.value = sum.occupied;
    }
  }

  function buildGrid(doc) {
    cells.clear();
    countedRows.clear();
    floorHeads.clear();
    const floors = new Map(); // floor -> zone -> {bays, counted}
    const place = (floor, zone) => {
      if (!floors.has(floor)) floors.set(floor, new Map());
      const zones = floors.get(floor);
      if (!zones.has(zone)) zones.set(zone, { bays: [], counted: [] });
      return zones.get(zone);
    };
    for (const bay of doc.bays) place(bay.floor, bay.zone).bays.push(bay);
    for (const group of doc.counted) place(group.floor, group.zone).counted.push(group);
    const sections = [...floors.keys()].sort(byName).map((floor) => {
      const count = make("span", {});
      floorHeads.set(floor, count);
      const zones = floors.get(floor);
      const parts = [...zones.keys()].sort(byName).map((zone) => {
        const { bays, counted } = zones.get(zone);
        const list = make("ul", { class: "bays", "aria-label": `Floor ${floor}, zone ${zone}` },
          ...bays.map((bay) => {
            const cell = make("li", { class: "bay", "data-bay": bay.bayId },
              make("span", { class: "id" }, bay.bayId),
              make("span", { class: "sym", "aria-hidden": "true" }),
              bay.type === "regular" ? null : make("span", { class: "kind" }, bay.type),
              make("span", { class: "visually-hidden state" }));
            cells.set(bay.bayId, cell);
            return cell;
          }));
        let line = null;
        if (counted.length) {
          const text = make("span", {});
          const meter = make("meter", { min: "0", "aria-hidden": "true" });
          countedRows.set(`${floor}/${zone}`, { text, meter });
          line = make("p", { class: "counted" }, meter, text);
        }
        return make("div", { class: "zone" }, make("h4", {}, `Zone ${zone}`),
          bays.length ? list : null, line);
      });
      return make("section", { class: "floor", "aria-label": `Floor ${floor}` },
        make("div", { class: "floor-head" }, make("h3", {}, `Floor ${floor}`), count),
        make("div", { class: "zones" }, ...parts));
    });
    $("floors").replaceChildren(...sections);
  }

  function showBay(cell, bay, flash) {
    const state = bay.inService ? bay.state : "out";
    const text = bay.inService ? STATES[state].text : `out of service, ${bay.state}`;
    if (cell.dataset.state === state && cell.title.endsWith(text)) return;
    cell.dataset.state = state;
    cell.className = `bay s-${state}`;
    cell.querySelector(".sym").textContent = STATES[state].symbol;
    cell.querySelector(".state").textContent = text;
    const kind = bay.type === "regular" ? "" : ` (${bay.type})`;
    cell.title = `${bay.bayId}${kind}: ${text}`;
    if (flash) {
      cell.classList.add("changed");
      setTimeout(() => cell.classList.remove("changed"), 1500);
    }
  }

  // --- the technician's view --------------------------------------------------------------

  async function pollTechnician() {
    if (session.role !== "technician") return;
    try {
      const [lanes, plates, alarms, sync] = await Promise.all([
        call("GET", "/api/v1/lanes"), call("GET", "/api/v1/plates/recent?limit=60"),
        call("GET", "/api/v1/alarms"), call("GET", "/api/v1/sync")]);
      if (session.role !== "technician") return; // logged out meanwhile
      showLanes(lanes.lanes, plates.plates);
      showAlarms(alarms.alarms);
      showSync(sync.sync);
    } catch (e) {
      if (e.status === 401 || e.status === 403) identify();
    }
  }

  function showLanes(lanes, plates) {
    const ids = lanes.map((lane) => lane.laneId).join();
    if (ids !== [...laneCards.keys()].join()) {
      laneCards.clear();
      $("lane-list").replaceChildren(...lanes.map(laneCard));
    }
    for (const lane of lanes) {
      const { facts, list } = laneCards.get(lane.laneId);
      const pairs = [["mode", lane.mode], ["state", lane.state], ["barrier", lane.barrier],
        ["passed", lane.passages], ["refused", lane.refusals], ["tailgates", lane.tailgates]];
      facts.replaceChildren(...pairs.map(([name, value]) => make("div", {},
        make("dt", {}, name), make("dd", {
          class: name === "state" && lane.outOfOrder ? "bad" : null,
        }, value))));
      const reads = plates.filter((p) => p.laneId === lane.laneId).slice(0, 3);
      list.replaceChildren(...(reads.length ? reads.map((read) => make("li", {},
        make("span", { class: "plate" }, read.plate || "no read"),
        make("span", {}, time(read.at)),
        make("span", {}, `${read.allowed ? "let in/out" : "refused"}: ${read.decision}`),
        make("span", {}, `${Math.round(read.confidence * 100)}%`)))
        : [make("li", {}, "no plate read lately")]));
    }
  }

  function laneCard(lane) {
    const titleId = `lane-${lane.laneId}`;
    const formId = `gate-${lane.laneId}`;
    const facts = make("dl", { class: "facts" });
    const list = make("ul", { class: "plates", "aria-label": "Last plates read" });
    const result = make("p", { class: "hint", role: "status" });
    const toggle = make("button", {
      type: "button", class: "open-gate", "aria-expanded": "false", "aria-controls": formId,
    }, "Open gate\u2026");
    const reason = make("input", {
      name: "reason", required: true, minlength: "3", maxlength: "500", autocomplete: "off",
    });
    const cancel = make("button", { type: "button", class: "secondary" }, "Cancel");
    const form = make("form", { id: formId, class: "actions", hidden: true },
      make("label", {}, "Reason (goes into the audit trail)", reason),
      make("button", { type: "submit" }, "Open the gate"), cancel);
    const close = () => {
      form.hidden = true;
      toggle.hidden = false;
      toggle.setAttribute("aria-expanded", "false");
      reason.value = "";
      toggle.focus();
    };
    toggle.addEventListener("click", () => {
      form.hidden = false;
      toggle.hidden = true;
      toggle.setAttribute("aria-expanded", "true");
      reason.focus();
    });
    cancel.addEventListener("click", close);
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") close();
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const why = reason.value.trim();
      if (why.length < 3) {
        result.textContent = "Give a reason of 3 characters or more.";
        reason.focus();
        return;
      }
      const submit = form.querySelector("button[type=submit]");
      submit.disabled = true;
      try {
        await call("POST", `/api/v1/lanes/${encodeURIComponent(lane.laneId)}/open`,
          { reason: why });
        result.textContent = `Gate opened: ${why}.`;
        close();
        pollTechnician();
      } catch (e) {
        result.textContent = `Not opened: ${e.message}`;
        if (e.status === 401) identify();
      } finally {
        submit.disabled = false;
      }
    });
    const card = make("article", {
      class: "lane", "aria-labelledby": titleId, "data-lane": lane.laneId,
    },
      make("h3", { id: titleId }, lane.name || lane.laneId, " ",
        make("span", { class: "hint" }, `${lane.laneId}, ${lane.direction}`)),
      facts, make("h4", {}, "Last plates"), list,
      make("div", { class: "actions" }, toggle), form, result);
    laneCards.set(lane.laneId, { card, facts, list });
    return card;
  }

  function showAlarms(alarms) {
    const shown = alarms.map((a) => `${a.alarmId}/${a.severity}/${a.raisedAt}`).join();
    if (alarmIds !== null && shown === alarmsShown) return;
    const added = alarmIds === null ? [] : alarms.filter((a) => !alarmIds.has(a.alarmId));
    alarmIds = new Set(alarms.map((a) => a.alarmId));
    alarmsShown = shown;
    if (added.length) announce(`New alarm: ${added.map((a) => a.message).join("; ")}`);
    if (!alarms.length) {
      $("alarm-list").replaceChildren(make("li", { class: "none" }, "No active alarm."));
      return;
    }
    $("alarm-list").replaceChildren(...alarms.map((alarm) => {
      const ack = make("button", { type: "button" }, "Acknowledge");
      const item = make("li", { class: alarm.severity, "data-alarm": alarm.alarmId },
        make("span", { class: "sev" }, alarm.severity), " ",
        make("span", {}, alarm.component || ""),
        make("p", {}, alarm.message),
        make("p", { class: "hint" }, `${alarm.alarmId}, since ${time(alarm.raisedAt)}`), ack);
      ack.addEventListener("click", async () => {
        ack.disabled = true;
        try {
          await call("POST", `/api/v1/alarms/${encodeURIComponent(alarm.alarmId)}/ack`);
          announce(`Alarm ${alarm.alarmId} acknowledged.`);
          pollTechnician();
        } catch (e) {
          notice(`Not acknowledged: ${e.message}`);
          ack.disabled = false;
        }
      });
      return item;
    }));
  }

  function showSync(sync) {
    const up = Boolean(sync.connected);
    const lag = sync.lag_s == null ? "none waiting" : duration(sync.lag_s);
    const pairs = [
      ["Link", make("span", { class: up ? "up" : "down" },
        up ? "\u25CF connected" : "\u25CB offline, keeping events")],
      ["Transport", sync.transport || "-"],
      ["Not yet sent", `${sync.backlog} events`],
      ["Oldest waiting", lag],
    ];
    if (sync.acked != null) pairs.push(["Acknowledged since start", sync.acked]);
    if (sync.last_error) pairs.push(["Last error", sync.last_error]);
    $("sync-figures").replaceChildren(...pairs.flatMap(([name, value]) => [
      make("dt", {}, name), make("dd", {}, value)]));
  }

  // --- today's charts ---------------------------------------------------------------------

  async function loadReport() {
    if (session.role !== "technician") return;
    try {
      const today = await call("GET", "/api/v1/report/today");
      if (session.role === "technician") showReport(today);
    } catch (e) {
      $("today-notes").textContent = `Today's report is not available: ${e.message}`;
    }
  }

  function showReport(today) {
    report = today;
    lotTz = report.timezone;
    const cur = report.currency;
    const t = report.totals;
    const hours = report.hours;
    const share = t.occupancy == null ? "-" : `${Math.round(t.occupancy * 100)}%`;
    const occupancy = t.occupancy == null ? "No hour has ended yet today."
      : `Occupancy ${share} on average, peak ${t.occupied_max} bays; ${t.entries} entries,`
        + ` ${t.exits} exits.`;
    $("today-title").textContent = `Today, ${report.day}`;
    $("today-summary").textContent = `${occupancy} ${t.sessions_ended} stays ended with`
      + ` ${money(t.fees_minor, cur)} in fees; ${money(t.payments_minor, cur)} paid.`;
    const labels = hours.map((h) => h.label.slice(0, 2));
    bars($("chart-occupancy"), labels, [{
      cls: "mean", name: "mean",
      values: hours.map((h) => (h.occupancy == null ? null : h.occupancy * 100)),
    }], {
      max: 100, ticks: [0, 25, 50, 75, 100], format: (v) => `${v}%`,
      marks: hours.map((h) => (h.has_occupancy && h.capacity
        ? (100 * h.occupied_max) / h.capacity : null)),
    });
    $("chart-occupancy-desc").textContent = t.occupancy == null ? "No hour has ended yet."
      : `Mean ${share}; peak ${t.occupied_max} bays.`;
    const scale = cur ? 10 ** new Intl.NumberFormat(undefined, { style: "currency", currency: cur })
      .resolvedOptions().maximumFractionDigits : 1;
    const fees = hours.map((h) => h.fees_minor / scale);
    const paid = hours.map((h) => h.payments_minor / scale);
    const step = niceCeiling(Math.max(1, ...fees, ...paid) / 4);
    bars($("chart-revenue"), labels, [
      { cls: "fees", name: "fees", values: fees }, { cls: "paid", name: "paid", values: paid },
    ], {
      max: 4 * step, ticks: [0, step, 2 * step, 3 * step, 4 * step],
      format: (v) => money(Math.round(v * scale), cur),
    });
    $("chart-revenue-desc").textContent = `Fees ${money(t.fees_minor, cur)}, payments`
      + ` ${money(t.payments_minor, cur)}.`;
    hourTable(report);
    $("today-notes").textContent = report.notes.map(
      (note) => `${note[0].toUpperCase()}${note.slice(1)}.`).join(" ");
  }

  function niceCeiling(value) {
    const power = 10 ** Math.floor(Math.log10(value));
    const step = [1, 2, 2.5, 5, 10].find((s) => s * power >= value);
    return step * power;
  }

  function bars(chart, labels, series, { max, ticks, format, marks }) {
    // Drawn at the size it is shown, so that its text is the page's size on a phone too.
    const width = Math.max(300, Math.min(960, chart.parentElement.clientWidth || 720));
    const height = width < 500 ? 200 : 240;
    chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const left = 64;
    const right = 8;
    const top = 22;
    const bottom = 24;
    const plotWidth = width - left - right;
    const plotHeight = height - top - bottom;
    const slot = plotWidth / Math.max(labels.length, 1);
    const y = (v) => top + plotHeight - (Math.min(v, max) / max) * plotHeight;
    const nodes = [];
    for (const tick of ticks) {
      nodes.push(svg("line", {
        class: "grid", x1: left, x2: width - right, y1: y(tick), y2: y(tick),
      }));
      nodes.push(svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end" }, format(tick)));
    }
    const barWidth = (slot * 0.8) / series.length;
    series.forEach((s, k) => s.values.forEach((value, i) => {
      if (value == null || value <= 0) return;
      const x = left + i * slot + slot * 0.1 + k * barWidth;
      nodes.push(svg("rect", {
        class: s.cls, x, y: y(value), width: Math.max(barWidth - 1, 1), height: y(0) - y(value),
      }));
    }));
    (marks || []).forEach((value, i) => {
      if (value == null) return;
      const x = left + i * slot + slot * 0.1;
      nodes.push(svg("line", {
        class: "peak", x1: x, x2: x + slot * 0.8, y1: y(value), y2: y(value),
      }));
    });
    const every = Math.ceil(28 / slot); // a label every 28 px or more
    labels.forEach((label, i) => {
      if (i % every) return;
      nodes.push(svg("text", { x: left + (i + 0.5) * slot, y: height - 6, "text-anchor": "middle" },
        label));
    });
    const keys = marks ? [["mean", "mean"], ["peak", "peak"]] : series.map((s) => [s.cls, s.name]);
    keys.forEach(([cls, name], k) => {
      const x = left + 8 + k * 90;
      nodes.push(cls === "peak"
        ? svg("line", { class: cls, x1: x, x2: x + 14, y1: 10, y2: 10 })
        : svg("rect", { class: cls, x, y: 4, width: 14, height: 12 }));
      nodes.push(svg("text", { class: "key", x: x + 18, y: 14 }, name));
    });
    chart.replaceChildren(...nodes);
  }

  function hourTable(report) {
    const cur = report.currency;
    const head = make("thead", {}, make("tr", {}, ...["hour", "occupancy", "peak", "entries",
      "exits", "stays ended", "fees", "payments"].map((h) => make("th", { scope: "col" }, h))));
    const rows = report.hours.map((h) => make("tr", {},
      make("th", { scope: "row" }, h.label),
      make("td", {}, h.occupancy == null ? "-" : `${Math.round(h.occupancy * 100)}%`),
      make("td", {}, h.has_occupancy ? h.occupied_max : "-"),
      make("td", {}, h.entries), make("td", {}, h.exits), make("td", {}, h.sessions_ended),
      make("td", {}, money(h.fees_minor, cur)), make("td", {}, money(h.payments_minor, cur))));
    $("today-table").replaceChildren(make("caption", {}, `${report.lot_id}, ${report.day}`
      + ` (${report.timezone})`), head, make("tbody", {}, ...rows));
  }

  // --- start --------------------------------------------------------------------------------

  function start() {
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => report && showReport(report), 200);
    });
    $("login-form").addEventListener("submit", logIn);
    $("logout").addEventListener("click", logOut);
    $("login-open").addEventListener("click", () => showLogin(true));
    $("login-cancel").addEventListener("click", () => showLogin(false));
    identify();
  }

  start();
})();
