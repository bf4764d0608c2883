"""Task definitions, one small module per benchmark family. Importing a module registers its tasks."""
