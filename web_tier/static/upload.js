// The upload page: uploads each file to POST /api/jobs?batch=<id> (a few at a time, with progress),
// then one long-poll loop on GET /api/jobs?ids=...&wait=20 shows results as they arrive.
// All files of a page belong to one batch whose id is in the URL (?batch=<id>): a reload, or
// the link opened elsewhere, shows the batch's results again from GET /api/batches/<id>, and
// "Download results (CSV)" appears once the batch has results.
"use strict";
(function () {
  const MAX_PARALLEL_UPLOADS = 3;  // browsers allow ~6 connections per host; leave room for polling
  const POLL_WAIT_S = 20;
  const waiting = [];              // files not yet sent
  const pending = new Map();       // job id -> card, sent and not finished
  let uploading = 0, polling = false, total = 0, finished = 0;
  let batchId = new URLSearchParams(location.search).get("batch");

  const $ = (sel, root) => (root || document).querySelector(sel);
  const drop = $("#drop"), input = $("#files"), results = $("#results"), summary = $("#summary");
  const csv = $("#csv");

  function summarize() {
    const busy = total - finished;
    summary.textContent = total ? `${finished} of ${total} done` + (busy ? ` · ${busy} in progress` : "") : "";
    if (batchId && finished > 0) {
      csv.href = `/api/batches/${encodeURIComponent(batchId)}.csv`;
      csv.hidden = false;
    }
  }

  function ensureBatch() {
    if (batchId) return batchId;
    // getRandomValues works on plain http too (randomUUID needs a secure context).
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    batchId = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    history.replaceState(null, "", `?batch=${batchId}`);
    return batchId;
  }

  function newCard(name) {
    const card = $("#card").content.firstElementChild.cloneNode(true);
    card.dataset.name = name;
    $(".name", card).textContent = name;
    $(".name", card).title = name;
    return card;
  }

  function setStatus(card, status, text) {
    card.dataset.status = status;
    $(".status", card).textContent = text;
  }

  function addFiles(files) {
    ensureBatch();
    const batch = document.createDocumentFragment();  // a drop keeps its order, newest drop on top
    for (const file of files) {
      const card = newCard(file.name);
      const img = $("img", card);
      img.src = URL.createObjectURL(file);
      img.onload = () => URL.revokeObjectURL(img.src);
      img.onerror = () => { URL.revokeObjectURL(img.src); img.hidden = true; };
      setStatus(card, "waiting", "waiting to upload");
      batch.append(card);
      waiting.push({ file, card });
      total++;
    }
    results.prepend(batch);
    summarize();
    pump();
  }

  function finish(card, status, text) {
    setStatus(card, status, text);
    finished++;
    summarize();
  }

  function pump() {
    while (uploading < MAX_PARALLEL_UPLOADS && waiting.length) {
      uploading++;
      upload(waiting.shift()).finally(() => { uploading--; pump(); });
    }
  }

  function upload({ file, card }) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      const fill = $(".fill", card);
      xhr.open("POST", `/api/jobs?batch=${encodeURIComponent(batchId)}`);
      xhr.responseType = "json";
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) {
          const pct = Math.round((100 * e.loaded) / e.total);
          fill.style.width = pct + "%";
          setStatus(card, "uploading", `uploading ${pct}%`);
        }
      };
      xhr.onload = () => {
        const body = xhr.response || {};
        const job = (body.jobs || [])[0];
        fill.style.width = "100%";
        if (xhr.status === 202 && job) {
          card.dataset.job = job.id;
          card.dataset.sentAt = String(performance.now());
          pending.set(job.id, card);
          setStatus(card, "queued", "waiting for a worker…");
          poll();
        } else {
          const err = (body.errors || [])[0];
          finish(card, "error", (err && err.error) || body.error || `upload failed (HTTP ${xhr.status})`);
        }
        resolve();
      };
      xhr.onerror = () => { finish(card, "error", "upload failed: network error"); resolve(); };
      const form = new FormData();
      form.append("myfile", file, file.name);
      setStatus(card, "uploading", "uploading 0%");
      xhr.send(form);
    });
  }

  function show(job, card) {
    card = card || pending.get(job.id);
    if (!card || job.status === "queued") return;
    pending.delete(job.id);
    if (job.status === "done") {
      $(".label", card).textContent = job.label;
      $(".score", card).textContent = job.score == null ? "" : `${(100 * job.score).toFixed(1)}%`;
      $(".time", card).textContent = job.total_ms == null ? "" : `· ${(job.total_ms / 1000).toFixed(2)} s`;
      finish(card, "done", "classified");
    } else {
      finish(card, "failed", job.error || "failed");
    }
  }

  async function poll() {
    if (polling) return;
    polling = true;
    try {
      while (pending.size) {
        const ids = Array.from(pending.keys()).slice(0, 100);
        try {
          const resp = await fetch(`/api/jobs?ids=${ids.join(",")}&wait=${POLL_WAIT_S}`);
          if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
          const body = await resp.json();
          body.jobs.forEach((job) => show(job));
          for (const id of body.unknown) {
            const card = pending.get(id);
            pending.delete(id);
            if (card) finish(card, "error", "the server does not know this job");
          }
        } catch (e) {
          await new Promise((r) => setTimeout(r, 1000));  // server restarting: try again
        }
      }
    } finally {
      polling = false;
    }
  }

  // A reload (or the batch link opened elsewhere): the batch's jobs from the server, any web process.
  function restoredCards(jobs) {
    const list = document.createDocumentFragment();
    for (const job of jobs) {
      const card = newCard(job.name);
      card.dataset.job = job.id;
      $("img", card).hidden = true;  // the picture stayed on the machine that sent it
      $(".fill", card).style.width = "100%";
      list.append(card);
      total++;
      if (job.status === "queued") {
        pending.set(job.id, card);
        setStatus(card, "queued", "waiting for a worker…");
      } else {
        show(job, card);
      }
    }
    return list;
  }

  async function restore(tries = 0) {
    if (!batchId) return;
    let body;
    try {
      const resp = await fetch(`/api/batches/${encodeURIComponent(batchId)}`);
      if (!resp.ok) return;  // unknown batch (nothing uploaded yet): start empty
      body = await resp.json();
    } catch (e) {
      return;
    }
    const shown = new Set(Array.from(results.querySelectorAll(".card"), (c) => c.dataset.job));
    const cards = restoredCards(body.jobs.filter((j) => !shown.has(j.id)));
    if (tries) results.append(cards); else results.prepend(cards);
    summarize();
    poll();
    // The batch index lags the job table for a moment after the last upload: fetch what it had not listed yet.
    if (body.listed < body.total && tries < 10) setTimeout(() => restore(tries + 1), 1000);
  }

  input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault();
    drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => addFiles(Array.from(e.dataTransfer.files)));
  restore();
})();
