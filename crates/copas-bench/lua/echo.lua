-- The echo protocol of examples/echo.rs on Lua Copas (Debian's lua-copas, LuaSocket):
-- each line comes back followed by "\n" ("*l" drops a "\r" before the "\n"), the line
-- "quit" closes. One coroutine per connection, dispatched by copas.loop() over
-- socket.select(), so it can serve only descriptors below FD_SETSIZE (1024).
--
--   luajit crates/copas-bench/lua/echo.lua --addr 127.0.0.1:7000
local copas = require("copas")
local socket = require("socket")

local addr = "127.0.0.1:7000"
local i = 1
while arg[i] do
  if arg[i] == "--addr" and arg[i + 1] then
    addr = arg[i + 1]
    i = i + 2
  elseif arg[i]:sub(1, 7) == "--addr=" then
    addr = arg[i]:sub(8)
    i = i + 1
  elseif arg[i] == "--help" or arg[i] == "-h" then
    print("usage: luajit echo.lua [--addr HOST:PORT]")
    os.exit(0)
  else
    io.stderr:write("echo.lua: unexpected argument '" .. arg[i] .. "'\n")
    os.exit(2)
  end
end
local host, port = addr:match("^(.*):(%d+)$")
if not host then
  io.stderr:write("echo.lua: bad --addr '" .. addr .. "' (want HOST:PORT)\n")
  os.exit(2)
end

local server, err = socket.bind(host, tonumber(port), 1024)
if not server then
  io.stderr:write("echo.lua: cannot listen on " .. addr .. ": " .. tostring(err) .. "\n")
  os.exit(1)
end

local function handle(skt)
  skt = copas.wrap(skt)
  while true do
    local line = skt:receive("*l")
    if not line or line == "quit" then
      break
    end
    skt:send(line .. "\n")
  end
end

copas.addserver(server, handle)
print("lua-copas echo listening on " .. addr)
io.stdout:flush()
copas.loop()
