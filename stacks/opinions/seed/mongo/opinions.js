// Seed data loaded into a fresh MongoDB volume.
db = db.getSiblingDB("opinions");
db.opinions.insertMany([
  { _id: 1, author: "ada", text: "Local stacks should behave like production." },
  { _id: 2, author: "grace", text: "Pin your image tags." },
]);
