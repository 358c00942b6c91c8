// What every page shares: calls to the API with the session cookie, the words of the pages in
// Korean and English, and signing out. No framework and no build step.

const WORDS = {
  ko: {
    title: "120 다산콜센터", signin: "로그인", username: "아이디", password: "비밀번호",
    signout: "로그아웃", language: "English", wrong: "아이디 또는 비밀번호가 맞지 않습니다.",
    dialplan: "다이얼플랜", file: "파일", check: "검사", save: "저장", diff: "변경 내용",
    publish: "게시", versions: "게시 이력", rollback: "되돌리기", live: "운영 중",
    prompts: "안내 멘트", play: "듣기", saved: "저장했습니다.", published: "게시했습니다: 버전 ",
    desk: "상담 화면", state: "상태", ready: "상담 가능", pause: "휴식", logout_agent: "로그아웃(상담)",
    softphone: "소프트폰", registered: "등록됨", not_registered: "등록 안 됨",
    current_call: "현재 통화", no_call: "통화 없음", caller: "발신 번호", line: "회선",
    district: "자치구", path: "메뉴 경로", wait: "대기", bot: "챗봇 대화", question: "질문 유형", complaint: "접수 민원", complaints: "접수 민원", receipt: "접수 번호", nodes: "노드",
    search: "지식 검색", ask: "찾기", record: "상담 기록", category: "분류", notes: "메모",
    resolution: "처리 결과", resolved: "해결", transferred: "이관", callback_needed: "회신 필요",
    unresolved: "미해결", today: "오늘 실적", wallboard: "상황판", queues: "대기열",
    waiting: "대기 고객", longest: "최장 대기(초)", service_level: "서비스 레벨(15초)",
    abandoned: "포기", handle: "평균 처리(초)", agents: "상담사", for: "경과(초)",
    calls_live: "진행 중 통화", containment: "챗봇 해결률", by_hour: "시간대별 통화",
    transfer: "전환", to_queue: "대기열로", upload: "녹음 올리기", knowledge: "지식 베이스",
    delete: "삭제", add: "추가", sip_password: "SIP 비밀번호(한 번만 표시):",
    to_agent: "상담사에게", to_number: "부서 번호로", consult: "먼저 협의", complete: "전환 완료",
    cancel: "협의 취소", callbacks: "회신 예약", calls: "통화", records: "상담 기록",
    listen: "청취", listen_from: "청취할 내 소프트폰:",
  },
  en: {
    title: "120 Dasan Call Center", signin: "Sign in", username: "Username", password: "Password",
    signout: "Sign out", language: "한국어", wrong: "Wrong username or password.",
    dialplan: "Dialplan", file: "File", check: "Check", save: "Save", diff: "Changes",
    publish: "Publish", versions: "Versions", rollback: "Roll back", live: "live",
    prompts: "Prompts", play: "Play", saved: "Saved.", published: "Published: version ",
    desk: "Agent desk", state: "State", ready: "Ready", pause: "Pause", logout_agent: "Log out",
    softphone: "Softphone", registered: "registered", not_registered: "not registered",
    current_call: "Current call", no_call: "No call", caller: "Caller", line: "Line",
    district: "District", path: "Menu path", wait: "Wait", bot: "Callbot", question: "Question", complaint: "Complaint", complaints: "Complaints", receipt: "Receipt", nodes: "Nodes",
    search: "Knowledge search", ask: "Search", record: "Consultation record",
    category: "Category", notes: "Notes", resolution: "Outcome", resolved: "Resolved",
    transferred: "Transferred", callback_needed: "Callback needed", unresolved: "Unresolved",
    today: "My day", wallboard: "Wallboard", queues: "Queues", waiting: "Waiting",
    longest: "Longest wait (s)", service_level: "Service level (15 s)", abandoned: "Abandoned",
    handle: "Avg handle (s)", agents: "Agents", for: "For (s)", calls_live: "Calls now",
    containment: "Callbot containment", by_hour: "Calls by hour", transfer: "Transfer",
    to_queue: "to queue", upload: "Upload recording", knowledge: "Knowledge base",
    delete: "Delete", add: "Add", sip_password: "SIP password (shown once):",
    to_agent: "to agent", to_number: "to department number", consult: "consult first",
    complete: "Complete transfer", cancel: "Cancel consultation", callbacks: "My callbacks",
    calls: "calls", records: "records", listen: "Listen", listen_from: "Listen from my softphone:",
  },
};

export function language() {
  return localStorage.getItem("ivr.language") || (navigator.language.startsWith("ko") ? "ko" : "en");
}

export function t(key) {
  return WORDS[language()][key] ?? key;
}

// Every element with data-i18n="key" shows that word in the chosen language.
export function translate(root = document) {
  document.documentElement.lang = language();
  for (const element of root.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
}

export async function api(path, options = {}) {
  const headers = { "X-IVR-Request": "1", ...(options.headers || {}) };
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, { credentials: "same-origin", ...options, headers });
  if (response.status === 401) {
    location.href = "/";
    throw new Error("signed out");
  }
  const text = await response.text();
  const body = text ? (response.headers.get("content-type") || "").includes("json")
    ? JSON.parse(text) : text : null;
  if (!response.ok) {
    const error = new Error(typeof body?.detail === "string" ? body.detail
      : JSON.stringify(body?.detail ?? body));
    error.status = response.status;
    error.body = body;
    throw error;
  }
  return body;
}

// The header of every signed-in page: title, language switch, sign out.
export function header(titleKey) {
  const bar = document.createElement("header");
  bar.innerHTML = `<h1><span data-i18n="title"></span> · <span data-i18n="${titleKey}"></span></h1>
    <button class="plain" id="switch-language" data-i18n="language"></button>
    <button class="plain" id="sign-out" data-i18n="signout"></button>`;
  document.body.prepend(bar);
  bar.querySelector("#switch-language").onclick = () => {
    localStorage.setItem("ivr.language", language() === "ko" ? "en" : "ko");
    translate();
    document.dispatchEvent(new Event("language"));
  };
  bar.querySelector("#sign-out").onclick = async () => {
    await api("/api/auth/logout", { method: "POST" });
    location.href = "/";
  };
  translate();
}

export function escape(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
