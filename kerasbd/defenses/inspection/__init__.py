"""Model inspectors: is this model backdoored, and towards which label? (No trigger needed.)"""
