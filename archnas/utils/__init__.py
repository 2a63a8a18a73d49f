"""Small helpers with no archnas dependencies: atomic files, devices, seeding."""
