-- gophermoon: an RFC 1436 Gopher server in plain Lua 5.3/5.4 (no C modules), run inetd-style:
-- one request line on stdin, the response on stdout, then exit. It is meant to run once per
-- connection in a read-only, network-less container with no shell, so it never calls
-- os.execute or io.popen and cannot learn its own host name: it is told what to print.
--
-- Configuration (arguments override the environment):
--   GOPHER_ROOT  / --root DIR     content root (absolute)                default /gopher
--   GOPHER_HOST  / --host NAME    host name printed in menus             default localhost
--   GOPHER_PORT  / --port N       port printed in menus                  default 70
--   GOPHER_INDEX / --index FILE   content index (see below)              default ROOT/.index
--
-- Why an index: plain Lua has no lstat, realpath or readdir, so it can neither list a
-- directory nor tell a symlink from a file. make-index.ts (run at build time, with lstat)
-- writes ROOT/.index, one line per regular file and directory reachable WITHOUT crossing a
-- symlink: TYPE TAB PATH TAB SIZE TAB TITLE. The server opens only ROOT .. PATH for a PATH
-- that is in the index (plus the index itself), so as long as the content does not change
-- after indexing (it lives in a read-only image) no open can leave the root: every component
-- of every opened path was a real directory or file inside the root when it was indexed.
-- A file whose size differs from the index is refused, which catches a stale index.
--
-- Selectors are "/"-separated paths relative to the root ("" and "/" are the root menu).
-- "/search" is reserved for type 7 search over the index's titles. Menus print info lines
-- and errors with the de facto fake fields: i<text> TAB TAB error.host TAB 1.

local MAX_LINE = 1024 -- raw request bytes before the line end
local MAX_SELECTOR = 255 -- decoded selector bytes
local MAX_QUERY = 255
local SEARCH = "/search"
local FAKE_HOST, FAKE_PORT = "error.host", "1"

local out = io.stdout

local function item(t, display, selector, host, port)
  return t .. display .. "\t" .. selector .. "\t" .. host .. "\t" .. port .. "\r\n"
end

local function info(text)
  return item("i", text, "", FAKE_HOST, FAKE_PORT)
end

local function send_error(message)
  out:write(item("3", message, "", FAKE_HOST, FAKE_PORT), ".\r\n")
end

-- A refusal is an answer, not a crash: raised as a table and turned into a type-3 menu.
local function refuse(message)
  error({ refusal = message }, 0)
end

local function config(argv)
  local cfg = {
    root = os.getenv("GOPHER_ROOT") or "/gopher",
    host = os.getenv("GOPHER_HOST") or "localhost",
    port = os.getenv("GOPHER_PORT") or "70",
    index = os.getenv("GOPHER_INDEX"),
  }
  local keys = { ["--root"] = "root", ["--host"] = "host", ["--port"] = "port", ["--index"] = "index" }
  local i = 1
  while i <= #argv do
    local key = keys[argv[i]]
    if not key then return nil, "unknown argument " .. argv[i] end
    if argv[i + 1] == nil then return nil, argv[i] .. " needs a value" end
    cfg[key] = argv[i + 1]
    i = i + 2
  end
  if cfg.root:sub(1, 1) ~= "/" then return nil, "content root must be an absolute path: " .. cfg.root end
  cfg.root = cfg.root:gsub("/+$", "")
  if cfg.host == "" or cfg.host:find("[%c%s]") then return nil, "bad host name: " .. cfg.host end
  local port = cfg.port:match("^%d+$") and tonumber(cfg.port)
  if not port or port < 1 or port > 65535 then return nil, "bad port: " .. cfg.port end
  cfg.index = cfg.index or (cfg.root .. "/.index")
  return cfg
end

-- Reads one request line without trusting the client to ever send a line end: at most
-- MAX_LINE bytes, byte by byte (stdio buffers the socket, so this is not a syscall a byte).
local function read_request()
  local buf, n = {}, 0
  while true do
    local c = io.stdin:read(1)
    if c == nil or c == "\n" then break end
    n = n + 1
    if n > MAX_LINE then refuse("Request line too long") end
    buf[n] = c
  end
  local line = table.concat(buf)
  return (line:gsub("\r$", ""))
end

local function percent_decode(s)
  -- Every "%" must start a two-hex-digit escape; decoding is done once, so "%252e" stays "%2e".
  if s:gsub("%%%x%x", ""):find("%", 1, true) then refuse("Bad percent-encoding in selector") end
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- Returns the canonical path ("/", "/a/b") and the search query (or nil).
local function parse_request(line)
  if line:find("[\r\n]") then refuse("CR or LF inside the request") end
  local raw, query = line, nil
  local tab = line:find("\t", 1, true)
  if tab then
    raw = line:sub(1, tab - 1)
    query = line:sub(tab + 1):match("^[^\t]*")
  end
  local selector = percent_decode(raw)
  if #selector > MAX_SELECTOR then refuse("Selector longer than " .. MAX_SELECTOR .. " bytes") end
  if selector:find("\0", 1, true) then refuse("NUL byte in selector") end
  if selector:find("[\r\n]") then refuse("CR or LF in selector") end
  if selector:find("%c") then refuse("Control character in selector") end
  local segments = {}
  for seg in selector:gmatch("[^/]+") do
    if seg == ".." then refuse("Selector contains a '..' segment") end
    if seg == "." then refuse("Selector contains a '.' segment") end
    segments[#segments + 1] = seg
  end
  if query then
    if #query > MAX_QUERY then refuse("Search query longer than " .. MAX_QUERY .. " bytes") end
    if query:find("%c") then refuse("Control character in search query") end
  end
  return "/" .. table.concat(segments, "/"), query
end

local function join(dir, name)
  return dir == "/" and "/" .. name or dir .. "/" .. name
end

-- An index path must be canonical: it is concatenated to the root and opened as is.
local function canonical(path)
  if path == "/" or path:sub(1, 1) ~= "/" or path:find("%c") or path:find("//", 1, true) or path:sub(-1) == "/" then
    return false
  end
  for seg in path:gmatch("[^/]+") do
    if seg == "." or seg == ".." then return false end
  end
  return true
end

local function load_index(file)
  local f = io.open(file, "rb")
  if not f then return nil end
  local entries = { ["/"] = { type = "1", path = "/", name = "", title = "" } }
  local order, children = {}, { ["/"] = {} }
  for line in f:lines() do
    line = line:gsub("\r$", "")
    local t, path, size, title = line:match("^([^#\t])\t([^\t]+)\t([%d-]+)\t([^\t]*)$")
    if t and canonical(path) and not entries[path] then
      local parent, name = path:match("^(.*)/([^/]+)$")
      if parent == "" then parent = "/" end
      local e = { type = t, path = path, name = name, size = tonumber(size), title = title }
      entries[path] = e
      order[#order + 1] = e
      children[parent] = children[parent] or {}
      table.insert(children[parent], e)
      if t == "1" then children[path] = children[path] or {} end
    end
  end
  f:close()
  return { entries = entries, order = order, children = children }
end

local function open_indexed(cfg, e)
  local f = io.open(cfg.root .. e.path, "rb")
  if not f then refuse("Cannot read " .. e.path) end
  if e.size and f:seek("end") ~= e.size then
    f:close()
    refuse("Content changed since it was indexed: " .. e.path)
  end
  f:seek("set")
  return f
end

local function send_gophermap(cfg, dir, e)
  local f = open_indexed(cfg, e)
  for line in f:lines() do
    line = line:gsub("\r$", "")
    local tab = line:find("\t", 1, true)
    if not tab or tab == 1 then
      out:write(info((line:gsub("\t", " "))))
    else
      local t, display = line:sub(1, 1), line:sub(2, tab - 1)
      local rest = line:sub(tab + 1) .. "\t"
      local fields = {}
      for field in rest:gmatch("([^\t]*)\t") do fields[#fields + 1] = field end
      local selector, host, port = fields[1], fields[2], fields[3]
      if host == nil or host == "" then
        -- A local item: our host and port; a relative selector is relative to this menu.
        host, port = cfg.host, cfg.port
        if selector ~= "" and selector:sub(1, 1) ~= "/" and selector:sub(1, 4) ~= "URL:" then
          selector = join(dir, selector)
        end
      elseif port == nil or port == "" then
        port = "70"
      end
      out:write(item(t, display, selector, host, port))
    end
  end
  f:close()
  out:write(".\r\n")
end

local function send_listing(cfg, index, dir)
  local kids = {}
  for _, e in ipairs(index.children[dir] or {}) do kids[#kids + 1] = e end
  table.sort(kids, function(a, b) return a.name < b.name end)
  for _, e in ipairs(kids) do
    out:write(item(e.type, e.name, e.path, cfg.host, cfg.port))
  end
  out:write(".\r\n")
end

local function send_menu(cfg, index, dir)
  local map = index.entries[join(dir, "gophermap")]
  if map and map.type ~= "1" then
    send_gophermap(cfg, dir, map)
  else
    send_listing(cfg, index, dir)
  end
end

local function send_text(cfg, e)
  local f = open_indexed(cfg, e)
  for line in f:lines() do
    line = line:gsub("\r$", "")
    if line:sub(1, 1) == "." then line = "." .. line end
    out:write(line, "\r\n")
  end
  f:close()
  out:write(".\r\n")
end

local function send_binary(cfg, e)
  local f = open_indexed(cfg, e)
  while true do
    local chunk = f:read(8192)
    -- A failed write means the client is gone (SIGPIPE is often ignored under systemd).
    if not chunk or not out:write(chunk) then break end
  end
  f:close()
end

-- Every word of the query (ASCII case-insensitive) must occur in an entry's title; entries
-- with no title (gophermaps) are not searchable.
local function send_search(cfg, index, query)
  local words = {}
  for w in query:lower():gmatch("%S+") do words[#words + 1] = w end
  if #words == 0 then refuse("Empty search query") end
  local found = 0
  for _, e in ipairs(index.order) do
    local title = e.title:lower()
    local ok = title ~= ""
    for _, w in ipairs(words) do
      if not ok then break end
      ok = title:find(w, 1, true) ~= nil
    end
    if ok then
      out:write(item(e.type, e.title, e.path, cfg.host, cfg.port))
      found = found + 1
    end
  end
  if found == 0 then out:write(info('No title matches "' .. query .. '"')) end
  out:write(".\r\n")
end

local function serve(cfg)
  local path, query = parse_request(read_request())
  local index = load_index(cfg.index)
  if not index then
    io.stderr:write("gophermoon: cannot read the content index ", cfg.index, "\n")
    refuse("Server has no content index")
  end
  if path == SEARCH then
    if not query then refuse("Search needs a query: send the selector, TAB, then the words") end
    return send_search(cfg, index, query)
  end
  local e = index.entries[path]
  if not e then refuse("Not found") end
  if e.type == "1" then
    send_menu(cfg, index, path)
  elseif e.type == "0" then
    send_text(cfg, e)
  else
    send_binary(cfg, e)
  end
end

local function main(argv)
  out:setvbuf("full")
  local cfg, problem = config(argv)
  if not cfg then
    io.stderr:write("gophermoon: ", problem, "\n")
    send_error("Server misconfigured")
    out:flush()
    return 1
  end
  local ok, err = xpcall(serve, function(e)
    if type(e) == "table" and e.refusal then return e end
    return debug.traceback(tostring(e), 2)
  end, cfg)
  if not ok then
    if type(err) == "table" then
      send_error(err.refusal)
    else
      io.stderr:write("gophermoon: ", err, "\n")
      send_error("Internal server error")
      out:flush()
      return 1
    end
  end
  out:flush()
  return 0
end

os.exit(main({ ... }))
