// The giveaway entry service: one endpoint to enter, one to check health.
const http = require("http");
const { createClient } = require("redis");
const redis = createClient({ url: process.env.REDIS_URL });
redis.connect();
http
  .createServer(async (req, res) => {
    if (req.url === "/health") return res.end("ok");
    const entries = await redis.incr("entries");
    res.end(JSON.stringify({ entries }));
  })
  .listen(3000);
