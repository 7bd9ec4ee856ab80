from clip_gaze.cli import main

main()
