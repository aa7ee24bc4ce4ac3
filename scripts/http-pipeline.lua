-- wrk script: pipelined keep-alive requests. Each write carries DEPTH copies of
-- `GET / HTTP/1.1` (default 16); wrk counts every response.
--
--   wrk -t2 -c100 -d5s -s scripts/http-pipeline.lua http://127.0.0.1:8080/ -- 16

local req

init = function(args)
    local depth = tonumber(args[1]) or 16
    local r = {}
    for i = 1, depth do
        r[i] = wrk.format(nil, wrk.path)
    end
    req = table.concat(r)
end

request = function()
    return req
end
