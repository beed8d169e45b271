from paymetrics.cli import main

main()
